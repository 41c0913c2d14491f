"""
``benchmarks/gpu_check.py`` run on a CPU (``--device cpu --iters 1``) as a subprocess: its json
holds a row per requested method with real figures, and its float32 loss is the loss of the same
model built separately from the same config and seed on the same synthetic batch. Also the
per-GPU batches it derives from the published configs, and ``benchmarks/pretrain_step.py``'s
aligned-architecture baseline of InsLoc.
"""

import datetime
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from detpre.data.build import build_pretrain_mapper, get_pretrain_dicts
from detpre.engine import get_detpre_cfg

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)
import gpu_check  # noqa: E402
import pretrain_step  # noqa: E402
from synthetic_data import SyntheticDatasets  # noqa: E402

METHODS = ["MoCo-v2-C4", "InsLoc-FPN"]
IMAGES = 4
# |bfloat16 loss - float32 loss| / float32 loss of these rows (2 synthetic images, random weights,
# one CPU thread, 2026-12-06): 0.06 % (MoCo-v2 R50-C4, loss 6.27) and 0.49 % (InsLoc R50-FPN, four
# per-level InfoNCE losses, 32.2); the bound is 6x the larger. A non-finite loss, an overflow or a
# wrongly scaled term breaks it.
REL_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    cmd = [sys.executable, os.path.join(BENCHMARKS, "gpu_check.py"), "--device", "cpu"]
    cmd += ["--iters", "1", "--warmup", "0", "--images", str(IMAGES), "--methods", *METHODS]
    cmd += ["--output", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(out) as f:
        return json.load(f), proc.stdout


def test_report_has_a_row_per_method_with_real_figures(report):
    data, stdout = report
    rows = data["rows"]
    assert [r["method"] for r in rows] == METHODS
    for r in rows:
        assert "error" not in r, r
        assert r["batch"] == gpu_check.CPU_BATCH
        assert math.isfinite(r["img_per_s"]) and r["img_per_s"] > 0
        assert r["img_per_s"] == pytest.approx(r["batch"] * 1e3 / r["ms_per_iter"])
        assert r["peak_memory_gib"] is None and r["aim_met"] is None  # not measured on a CPU
        f32, amp = r["loss_float32"], r["loss_amp"]
        assert math.isfinite(f32) and math.isfinite(amp) and f32 > 0, r
        assert r["loss_rel_diff"] == pytest.approx(abs(amp - f32) / f32)
        assert 0 < r["loss_rel_diff"] <= REL_TOLERANCE, r  # > 0: autocast reached the layers
        assert r["loss_ok"] and r["precision"] == "bfloat16" and r["channels_last"]
        assert r["name"] in stdout
    assert [r["aim_img_per_s"] for r in rows] == [1200, 800]
    assert "n/a off CUDA" in stdout and "elapsed" in stdout
    assert data["versions"]["torch"] == torch.__version__
    assert data["versions"]["torchvision"] == torchvision.__version__
    assert data["versions"]["numpy"] == np.__version__
    assert data["versions"]["detectron2"]
    assert data["device"].startswith("cpu")
    assert datetime.datetime.fromisoformat(data["date"]).tzinfo is not None


def test_float32_loss_is_the_loss_of_a_separately_built_model(
    report, repo_root, tmp_path, one_thread
):
    """MoCo-v2 R50-C4 built from its config with detectron2's ``build_model`` and seed 0, one
    forward (with gradients) on the first 2 synthetic images through its mapper."""
    row = report[0]["rows"][0]
    data = SyntheticDatasets(str(tmp_path), IMAGES, seed=0, prefix="test_gpu_check")
    try:
        cfg = get_detpre_cfg()
        cfg.merge_from_file(os.path.join(repo_root, row["config"]))
        cfg.MODEL.DEVICE = "cpu"
        cfg.DATASETS.TRAIN = (data.objects,)
        seed_all_rng(0)
        dicts = get_pretrain_dicts(cfg)
        mapper = build_pretrain_mapper(cfg, dicts)
        batch = [mapper(d) for d in dicts[: row["batch"]]]
        seed_all_rng(0)
        model = build_model(cfg)
        torch.manual_seed(1)
        with EventStorage():
            loss = sum(float(v.detach()) for v in model(batch).values())
    finally:
        data.remove()
    assert row["loss_float32"] == pytest.approx(loss, rel=1e-5)


def test_per_gpu_batch_is_the_release_batch_over_8_gpus():
    args = SimpleNamespace(batch_size=None, device="cuda")
    batches = {r.key: gpu_check.batch_size(r, args) for r in gpu_check.ROWS}
    # The configs' comments: 8 GPUs x 32 (MoCo-v2, InsLoc), SlotCon 512, LOCA 1024, 16 images for
    # AlignDet and Mask R-CNN.
    expected = {"MoCo-v2-C4": 32, "MoCo-v2-FPN": 32, "InsLoc-C4": 32, "InsLoc-FPN": 32}
    expected.update({"SlotCon-FPN": 64, "LOCA-ViT": 128, "LOCA-FPN": 128, "AlignDet-FPN": 2})
    assert batches == dict(expected, **{"MaskRCNN-FPN": 2})
    assert (
        gpu_check.batch_size(gpu_check.ROWS[0], SimpleNamespace(batch_size=None, device="cpu")) == 2
    )


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


@pytest.mark.parametrize("backbone", ["C4", "FPN"])
def test_insloc_baseline_differs_only_in_the_roi(backbone, one_thread):
    methods = {m.name: m for m in pretrain_step.select_methods(["InsLoc"])}
    assert set(methods) == {"InsLoc", "InsLoc-WholeImage", "MoCo-v2"}
    insloc = methods["InsLoc"]
    assert insloc.baseline == "InsLoc-WholeImage" and insloc.second_baseline == "MoCo-v2"
    assert insloc.targets == {"C4": 1.10, "FPN": 1.10}
    args = pretrain_step.parse_args(["--batch-size", "2"])
    cfg = pretrain_step.build_cfg(insloc, backbone, args)
    base = pretrain_step.build_cfg(methods["InsLoc-WholeImage"], backbone, args)
    a, b = _flat(cfg), _flat(base)
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert diff == {"INSLOC.WHOLE_IMAGE_ROI": (False, True), "INSLOC.BOX_AUG": (True, False)}
    # Same mapper and seed: the two rows step on identical batches.
    x, y = pretrain_step.build_batches(cfg, 1)[0], pretrain_step.build_batches(base, 1)[0]
    for u, v in zip(x, y):
        for view_u, view_v in zip(u["views"], v["views"]):
            assert torch.equal(view_u["image"], view_v["image"])
