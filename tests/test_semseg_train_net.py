"""
End to end: tools/train_net.py trains the segmentation configs of configs/semseg a few iterations
on the bundled COCO semantic set (labels from datasets/prepare_coco_sem_seg.py) and evaluates
them; mIoU, fwIoU and per-class IoU are recomputed from the saved predictions and the label PNGs,
independently of Detectron2's evaluator.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from detpre.data.datasets import COCO_SEM_SEG_CLASSES

NUM_IMAGES = 4
NAME = "semseg_e2e_four"
# Small enough for a CPU; no loader workers.
FAST = [
    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "SEMSEG.TRAIN_SCALE", "(64, 256)", "INPUT.CROP.SIZE", "(64, 64)",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160",
    "DATASETS.TRAIN", f"('{NAME}',)", "DATASETS.TEST", f"('{NAME}',)",
]  # fmt: skip


@pytest.fixture(scope="module")
def four_images(tmp_path_factory, repo_root, datasets_root):
    """A 4-image semantic set: coco_tiny val images (linked) with the prepared labels."""
    root = tmp_path_factory.mktemp("semseg")
    labels = root / "labels"
    cmd = [sys.executable, os.path.join(repo_root, "datasets", "prepare_coco_sem_seg.py")]
    cmd += ["--datasets", "coco_tiny_val", "--output-root", str(labels)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=repo_root)
    images, gts = root / "images", root / "gts"
    images.mkdir()
    gts.mkdir()
    stems = sorted(p[:-4] for p in os.listdir(labels / "coco_tiny_val"))[:NUM_IMAGES]
    for stem in stems:
        os.symlink(os.path.join(datasets_root, "coco_tiny", "val2017", stem + ".jpg"),
                   images / (stem + ".jpg"))  # fmt: skip
        os.symlink(labels / "coco_tiny_val" / (stem + ".png"), gts / (stem + ".png"))
    register = f"[('{NAME}', '{images}', '{gts}', '{','.join(COCO_SEM_SEG_CLASSES)}')]"
    return {"register": ["DATASETS.REGISTER_SEM_SEG", register], "gts": gts, "stems": stems}


def run_train_net(repo_root, config, out_dir, data, *opts, eval_only=False, num_gpus=1):
    cmd = [sys.executable, os.path.join(repo_root, "tools", "train_net.py")]
    cmd += ["--config-file", os.path.join(repo_root, "configs", "semseg", config)]
    cmd += ["--eval-only"] if eval_only else []
    cmd += ["--num-gpus", str(num_gpus)] if num_gpus > 1 else []
    cmd += FAST + data["register"] + ["OUTPUT_DIR", str(out_dir), *opts]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def independent_scores(prediction_file, gts, num_classes, ignore=255):
    """mIoU, fwIoU (%) and per-class IoU from the saved RLE predictions and the label PNGs: a
    class's IoU is |pred = c and gt = c| / |pred = c or gt = c| over labelled pixels; classes
    without ground-truth pixels are left out of the mean; fwIoU weights by ground-truth share."""
    with open(prediction_file) as f:
        predictions = json.load(f)
    by_file = {}
    for p in predictions:
        by_file.setdefault(p["file_name"], []).append(p)
    inter, pred_area, gt_area = (np.zeros(num_classes) for _ in range(3))
    for file_name, parts in by_file.items():
        stem = os.path.splitext(os.path.basename(file_name))[0]
        gt = np.array(Image.open(gts / (stem + ".png")), dtype=np.int64)
        pred = np.full(gt.shape, -1)
        for p in parts:
            pred[mask_util.decode(p["segmentation"]).astype(bool)] = p["category_id"]
        assert (pred >= 0).all(), "every pixel has one predicted class"
        valid = gt != ignore
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            pred_area[c] += np.sum((pred == c) & valid)
            gt_area[c] += np.sum((gt == c) & valid)
    present = gt_area > 0
    iou = inter[present] / (pred_area[present] + gt_area[present] - inter[present])
    weights = gt_area[present] / gt_area.sum()
    return 100 * iou.mean(), 100 * np.sum(iou * weights), dict(zip(np.flatnonzero(present), iou))


def read_results(out_dir):
    with open(os.path.join(out_dir, "results.csv")) as f:
        return {row["task"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize(
    "config",
    [
        "fcn_R50_D8_cpu_coco_sem_seg.yaml",
        "semantic_fpn_R50_FPN_cpu_coco_sem_seg.yaml",
        "linear_ViT_tiny_cpu_coco_sem_seg.yaml",
    ],
)
def test_train_then_miou_matches_independent_computation(repo_root, four_images, tmp_path, config):
    run_train_net(repo_root, config, tmp_path, four_images)
    row = read_results(tmp_path)["sem_seg"]
    predictions = tmp_path / "inference" / NAME / "sem_seg_predictions.json"
    miou, fwiou, per_class = independent_scores(
        predictions, four_images["gts"], len(COCO_SEM_SEG_CLASSES)
    )
    assert float(row["mIoU"]) == pytest.approx(miou, abs=1e-6)
    assert float(row["fwIoU"]) == pytest.approx(fwiou, abs=1e-6)
    for c, value in per_class.items():
        assert float(row[f"IoU-{COCO_SEM_SEG_CLASSES[c]}"]) == pytest.approx(100 * value, abs=1e-6)
    with open(tmp_path / "results.md") as f:
        table = f.read()
    assert "mIoU" in table and "| background |" in table
    assert os.path.isfile(tmp_path / "model_final.pth")


def test_eval_only_reproduces_the_final_evaluation(repo_root, four_images, tmp_path):
    config = "semantic_fpn_R50_FPN_cpu_coco_sem_seg.yaml"
    run_train_net(repo_root, config, tmp_path / "train", four_images)
    trained = read_results(tmp_path / "train")["sem_seg"]
    weights = str(tmp_path / "train" / "model_final.pth")
    log = run_train_net(
        repo_root, config, tmp_path / "eval", four_images, "MODEL.WEIGHTS", weights,
        eval_only=True,
    )  # fmt: skip
    evaluated = read_results(tmp_path / "eval")["sem_seg"]
    assert float(evaluated["mIoU"]) == pytest.approx(float(trained["mIoU"]), abs=1e-9)
    # The load table of a full segmentor checkpoint: the head is loaded too.
    assert "sem_seg_head" in log


def test_two_processes_gather_every_image(repo_root, four_images, tmp_path):
    """``--num-gpus 2`` on a CPU (2 gloo processes): each evaluates half of the images, and the
    gathered confusion matrices give the mIoU of all of them."""
    config = "fcn_R50_D8_cpu_coco_sem_seg.yaml"
    log = run_train_net(repo_root, config, tmp_path, four_images, num_gpus=2)
    assert "World size: 2" in log
    row = read_results(tmp_path)["sem_seg"]
    predictions = tmp_path / "inference" / NAME / "sem_seg_predictions.json"
    with open(predictions) as f:
        files = {p["file_name"] for p in json.load(f)}
    assert len(files) == NUM_IMAGES
    miou, _, _ = independent_scores(predictions, four_images["gts"], len(COCO_SEM_SEG_CLASSES))
    assert float(row["mIoU"]) == pytest.approx(miou, abs=1e-6)
