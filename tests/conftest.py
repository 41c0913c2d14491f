import logging
import os
import random
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.events import EventStorage

_SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))
# Tests read the bundled data through $DETECTRON2_DATASETS, as every detpre tool does. Set it before
# detectron2 / detpre are imported: their builtin datasets are rooted at import time.
os.environ.setdefault("DETECTRON2_DATASETS", _SHARED)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(autouse=True)
def seeded_rngs():
    """Every test starts from the same Python, NumPy and torch random states, whatever ran before
    it in its worker: a test's draws (crops, flips, ops) do not depend on the test order."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def datasets_root():
    root = os.environ["DETECTRON2_DATASETS"]
    if not os.path.isdir(os.path.join(root, "coco_tiny")):
        raise RuntimeError(f"DETECTRON2_DATASETS={root} does not hold the bundled datasets")
    return root


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def load_config():
    """
    A factory: ``load_config(path, *opts)`` merges a config file (absolute, or relative to the
    repository root) into detpre's defaults, on the CPU, then the ``KEY VALUE`` overrides.
    """
    from detpre.engine import get_detpre_cfg

    def load(path, *opts):
        cfg = get_detpre_cfg()
        cfg.merge_from_file(os.path.join(REPO_ROOT, path))
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
        return cfg

    return load


def _random_image_view(gen, size):
    return {"image": torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen)}


@pytest.fixture(scope="session")
def view_batch():
    """
    A factory of random pretraining batches: ``view_batch(seed, n=2, sizes=((64, 64), (64, 64)),
    view=None)`` is ``n`` images of ``{"views": [...]}``, one view per (height, width) of
    ``sizes``, drawn in order from one ``torch.Generator`` seeded with ``seed`` (the global RNGs
    are not touched). ``view(gen, size)`` makes a view; the default is ``{"image": ...}``, a random
    uint8 (3, height, width) image. A method's views add their fields (boxes, crop boxes, flips)
    with a ``view`` of their own, drawing from ``gen`` in their own order.
    """

    def make(seed, n=2, sizes=((64, 64), (64, 64)), view=None):
        view = view or _random_image_view
        gen = torch.Generator().manual_seed(seed)
        return [{"views": [view(gen, size) for size in sizes]} for _ in range(n)]

    return make


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny models are fastest so on a shared 2-core machine)."""
    num = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num)


@pytest.fixture(scope="session")
def tv_state():
    """A torchvision ResNet-50 state dict with every float tensor random (BN included)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    for k, v in state.items():
        if v.is_floating_point():
            v.copy_(torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v))
    return state


@pytest.fixture
def run_momentum_hook():
    """What the pretraining trainer does after an optimizer step: one MomentumScheduleHook call."""
    from detpre.engine.hooks import MomentumScheduleHook

    def run(model, cfg, iteration, max_iter):
        hook = MomentumScheduleHook()
        hook.trainer = SimpleNamespace(
            cfg=cfg, model=model, iter=iteration, max_iter=max_iter, storage=EventStorage()
        )
        hook.before_train()
        hook.after_step()

    return run


@pytest.fixture
def detpre_logs(caplog, monkeypatch):
    """caplog that sees detpre's records (detectron2's setup_logger may stop propagation)."""
    monkeypatch.setattr(logging.getLogger("detpre"), "propagate", True)
    caplog.set_level(logging.INFO, logger="detpre")
    return caplog


@pytest.fixture
def new_names():
    """Make unique dataset names; they are removed from the catalogs after the test."""
    names = []

    def make(prefix):
        names.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
