# detpre's two commands: `make demo` (the main job on the bundled data) and `make test`.
# Both create a virtual environment in .venv when none is active, install what they need into it
# (idempotent: a stamp file records a finished install), then run.
PYTHON ?= python3
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detpre-installed
# The bundled sample data lives beside the checkout; a user with full COCO / VOC sets their own.
DETECTRON2_DATASETS ?= $(abspath $(CURDIR)/../shared/datasets)
export DETECTRON2_DATASETS
# Threads per process: the CPU machines here have 2 cores.
TEST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: setup demo test lint format

$(STAMP): requirements.txt requirements-dev.txt setup.py tools/install_detectron2.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip<26" wheel
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

setup: $(STAMP)

demo: setup
	$(PY) tools/run_main_job.py $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=15 tests

lint: setup
	$(PY) -m black -l 100 --check detpre tools tests benchmarks datasets
	$(PY) -m isort --check-only detpre tools tests benchmarks datasets

format: setup
	$(PY) -m isort detpre tools tests benchmarks datasets
	$(PY) -m black -l 100 detpre tools tests benchmarks datasets
