import os

import pytest

_SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))
# Tests read the bundled data through $DETECTRON2_DATASETS, as every detpre tool does. Set it before
# detectron2 / detpre are imported: their builtin datasets are rooted at import time.
os.environ.setdefault("DETECTRON2_DATASETS", _SHARED)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="session")
def datasets_root():
    root = os.environ["DETECTRON2_DATASETS"]
    if not os.path.isdir(os.path.join(root, "coco_tiny")):
        raise RuntimeError(f"DETECTRON2_DATASETS={root} does not hold the bundled datasets")
    return root


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT
