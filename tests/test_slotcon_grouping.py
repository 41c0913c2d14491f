import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detpre.engine import get_detpre_cfg
from detpre.evaluation.slotcon_grouping import (
    compute_assignments,
    load_square_image,
    most_used_prototypes,
    nearest_segments,
    overlay,
    pixel_labels,
    prototype_palette,
    segment_scores,
    write_grouping_pictures,
)

# A SlotCon pretraining small enough for a CPU test: 64-px views, 4 images, 2 iterations, a
# narrow head and 16 prototypes.
TINY = [
    "SSL.EPOCHS", "0", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "4",
    "SLOTCON.CROP_SIZE", "64", "SLOTCON.HIDDEN_DIM", "64", "SLOTCON.OUT_DIM", "32",
    "SLOTCON.NUM_PROTOTYPES", "16", "DATALOADER.NUM_WORKERS", "0", "SSL.LOG_PERIOD", "1",
    "SEED", "1",
]  # fmt: skip
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _logits():
    """(3, 4, 2, 2) logits whose winners are known."""
    logits = torch.full((3, 4, 2, 2), -1.0)
    logits[0, 0] = 0.2
    logits[0, 1, 0, 0] = 0.9  # image 0: proto 1 wins (0, 0) at 0.9; proto 0 the rest at 0.2
    logits[1, 1] = 0.5  # image 1: proto 1 wins everything at 0.5
    logits[2, 2] = 0.3
    logits[2, 1, 1, :] = 0.7  # image 2: proto 1 wins row 1 at 0.7, proto 2 row 0 at 0.3
    return logits


def test_segment_scores_and_nearest_segments():
    logits = _logits()
    scores = segment_scores(logits)
    assert scores[0, 0].item() == pytest.approx(0.2) and scores[0, 1].item() == pytest.approx(0.9)
    assert scores[1, 1].item() == pytest.approx(0.5) and scores[2, 1].item() == pytest.approx(0.7)
    assert scores[2, 2].item() == pytest.approx(0.3)
    assert torch.isinf(scores[1, 0]) and torch.isinf(scores[0, 3])
    # prototype 1's segments, nearest first; images where it wins nothing are left out
    assert nearest_segments(logits, 1, topk=5) == [0, 2, 1]
    assert nearest_segments(logits, 1, topk=2) == [0, 2]
    assert nearest_segments(logits, 2, topk=5) == [2]
    assert nearest_segments(logits, 3, topk=5) == []
    with pytest.raises(ValueError, match="Prototype 4"):
        nearest_segments(logits, 4, topk=1)
    # pixels won: proto 1: 1 + 4 + 2, proto 0: 3, proto 2: 2
    assert most_used_prototypes(logits, 2) == [1, 0]
    assert most_used_prototypes(logits, 10) == [1, 0, 2]


def test_pixel_labels_and_overlay():
    logits = _logits()
    labels = pixel_labels(logits, 8)
    assert labels.shape == (3, 8, 8)
    assert (labels[1] == 1).all() and (labels[2, 6:] == 1).all() and (labels[2, :2] == 2).all()
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = overlay(image, mask, np.array([200, 0, 50], dtype=np.uint8), alpha=0.5)
    assert out[0, 0].tolist() == [150, 50, 75] and out[1, 1].tolist() == [100, 100, 100]
    palette = prototype_palette(5)
    assert palette.shape == (5, 3) and np.array_equal(palette, prototype_palette(5))


def test_write_grouping_pictures(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    written = write_grouping_pictures(
        images, _logits(), str(tmp_path), ["a", "b", "c"], prototypes=[1, 3], topk=2, alpha=1.0
    )
    assert [os.path.basename(p) for p in written["grouping"]] == ["a.png", "b.png", "c.png"]
    assert list(written["prototypes"]) == [1]  # prototype 3 wins no pixel: no picture
    palette = prototype_palette(4)
    b = cv2.cvtColor(cv2.imread(written["grouping"][1]), cv2.COLOR_BGR2RGB)
    assert b.shape == (16, 32, 3)
    assert np.array_equal(b[:, :16], images[1])  # the image, then its pixels in proto 1's colour
    assert (b[:, 16:] == palette[1]).all()
    row = cv2.cvtColor(cv2.imread(written["prototypes"][1]), cv2.COLOR_BGR2RGB)
    assert row.shape == (16, 32, 3)  # the 2 nearest segments: images 0 and 2
    labels = pixel_labels(_logits(), 16).numpy()
    for slot, i in enumerate([0, 2]):
        tile = row[:, 16 * slot : 16 * (slot + 1)]
        inside = labels[i] == 1
        assert inside.any() and (tile[inside] == [255, 0, 0]).all()
        assert np.array_equal(tile[~inside], images[i][~inside])


def test_load_square_image(datasets_root):
    path = os.path.join(datasets_root, "coco_tiny/val2017")
    name = sorted(os.listdir(path))[0]
    image = load_square_image(os.path.join(path, name), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8


@pytest.fixture(scope="module")
def pretrained(repo_root, tmp_path_factory):
    """A 2-iteration run of tools/pretrain_net.py on the SlotCon R50-C4 CPU config."""
    out = tmp_path_factory.mktemp("slotcon_run")
    cmd = [sys.executable, os.path.join(repo_root, "tools", "pretrain_net.py"), "--config-file"]
    cmd += [os.path.join(repo_root, "configs/pretrain/slotcon_R50_C4_cpu_coco.yaml")]
    done = subprocess.run(
        cmd + TINY + ["OUTPUT_DIR", str(out)],
        cwd=repo_root,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_pretrain_net_runs_slotcon(pretrained):
    with open(pretrained / "metrics.json") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert [r["iteration"] for r in rows] == [0, 1]
    for r in rows:
        assert np.isfinite(r["loss_slotcon_group"]) and np.isfinite(r["loss_slotcon_contrast"])
        assert 0.0 <= r["[metric]slotcon/contrast_acc"] <= 1.0
    # the teacher's momentum rises from SSL.MOMENTUM (0.99) by a cosine
    assert rows[0]["momentum"] == pytest.approx(0.99) and rows[1]["momentum"] > 0.99
    full = torch.load(pretrained / "model_final.pth", map_location="cpu", weights_only=False)
    export = torch.load(pretrained / "model_final_d2.pth", map_location="cpu", weights_only=False)
    assert full["iteration"] == 1
    assert export["model"] and set(export["model"]) <= {
        k[len("momentum.") :] for k in full["model"] if k.startswith("momentum.")
    }
    for k, v in export["model"].items():  # SSL.EXPORT "momentum": the teacher
        assert torch.equal(v, full["model"]["momentum." + k]), k


def _tool(repo_root):
    path = os.path.join(repo_root, "tools", "visualize_slotcon.py")
    spec = importlib.util.spec_from_file_location("visualize_slotcon", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_visualization_tool_writes_pictures(pretrained, repo_root, tmp_path):
    out = tmp_path / "pictures"
    cmd = [sys.executable, os.path.join(repo_root, "tools", "visualize_slotcon.py")]
    cmd += ["--config-file", str(pretrained / "config.yaml"), "--output", str(out)]
    cmd += ["--weights", str(pretrained / "model_final.pth"), "--dataset", "coco_tiny_val"]
    cmd += ["--num-images", "5", "--image-size", "64", "--num-prototypes", "2", "--topk", "3"]
    done = subprocess.run(cmd, cwd=repo_root, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    grouping = sorted(os.listdir(out / "grouping"))
    assert len(grouping) == 5
    for name in grouping:
        assert cv2.imread(str(out / "grouping" / name)).shape == (64, 128, 3)
    prototypes = sorted(os.listdir(out / "prototypes"))
    assert 1 <= len(prototypes) <= 2
    for name in prototypes:
        h, w = cv2.imread(str(out / "prototypes" / name)).shape[:2]
        assert h == 64 and w in (64, 128, 192)


def test_visualization_needs_the_teacher(pretrained, repo_root):
    tool = _tool(repo_root)
    cfg = get_detpre_cfg()
    cfg.merge_from_file(str(pretrained / "config.yaml"))
    with pytest.raises(ValueError, match="full pretraining checkpoint"):
        tool.load_slotcon(cfg, str(pretrained / "model_final_d2.pth"))
    model = tool.load_slotcon(cfg, str(pretrained / "model_final.pth"))
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    assert compute_assignments(model, images).shape == (2, 16, 2, 2)
