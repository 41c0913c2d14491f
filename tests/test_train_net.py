"""End to end: tools/train_net.py fine-tunes a few iterations and evaluates on the bundled data."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Small enough for a CPU: few iterations, small images, few proposals. The score threshold is 0 so
# an untrained detector still outputs boxes and pycocotools really computes AP on them.
FAST = [
    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(224,)", "INPUT.MAX_SIZE_TRAIN", "320",
    "INPUT.MIN_SIZE_TEST", "224", "INPUT.MAX_SIZE_TEST", "320",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "20",
]  # fmt: skip


def run_train_net(repo_root, config, out_dir, *opts, eval_only=False):
    cmd = [sys.executable, os.path.join(repo_root, "tools", "train_net.py")]
    cmd += ["--config-file", os.path.join(repo_root, "configs", "finetune", config)]
    cmd += ["--eval-only"] if eval_only else []
    cmd += FAST + ["OUTPUT_DIR", str(out_dir), *opts]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def read_results(out_dir):
    with open(os.path.join(out_dir, "results.csv")) as f:
        return {row["task"]: row for row in csv.DictReader(f)}


def test_mask_rcnn_fpn_coco_tiny_bbox_and_segm_ap(repo_root, datasets_root, tmp_path):
    log = run_train_net(repo_root, "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml", tmp_path)
    results = read_results(tmp_path)
    assert set(results) == {"bbox", "segm"}
    # Recompute AP from the saved predictions with pycocotools, independently of Detectron2.
    gt = COCO(os.path.join(datasets_root, "coco_tiny", "annotations", "instances_val2017.json"))
    with open(tmp_path / "inference" / "coco_tiny_val" / "coco_instances_results.json") as f:
        preds = json.load(f)
    assert len(preds) > 0
    assert {p["image_id"] for p in preds} <= set(gt.getImgIds())
    for task in ("bbox", "segm"):
        # For mask AP the instance area (small / medium / large) is the mask's: pycocotools takes
        # the box area when a result has "bbox", so it is dropped (as Detectron2 does).
        dt = gt.loadRes(
            [{k: v for k, v in p.items() if task == "bbox" or k != "bbox"} for p in preds]
        )
        ev = COCOeval(gt, dt, task)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        expected = ev.stats[:6] * 100
        got = [float(results[task][k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        np.testing.assert_allclose(got, np.nan_to_num(expected, nan=-100), atol=1e-6)
    # The run's other outputs.
    assert (tmp_path / "metrics.json").exists()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))
    assert (tmp_path / "results.md").read_text().startswith("| dataset | task | AP |")
    assert (tmp_path / "model_final.pth").exists()
    assert "Starting training from iteration 0" in log


def mini_voc_split(datasets_root, tmp_path, n=8):
    """A VOC-layout folder that links the bundled BCCD files and lists n test images."""
    src = os.path.join(datasets_root, "bccd_voc", "VOC2007")
    root = tmp_path / "mini" / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for sub in ("Annotations", "JPEGImages"):
        os.symlink(os.path.join(src, sub), root / sub)
    with open(os.path.join(src, "ImageSets", "Main", "test.txt")) as f:
        ids = f.read().split()[:n]
    (root / "ImageSets" / "Main" / "test_mini.txt").write_text("\n".join(ids) + "\n")
    return str(root)


def test_faster_rcnn_c4_bccd_voc_ap_and_eval_only(repo_root, datasets_root, tmp_path):
    # The test split is registered from the command line, as a user registers a VOC folder.
    voc = mini_voc_split(datasets_root, tmp_path)
    data = [
        "DATASETS.REGISTER_VOC",
        f"[('bccd_mini_test', '{voc}', 'test_mini', 'RBC,WBC,Platelets')]",
        "DATASETS.TEST",
        "('bccd_mini_test',)",
    ]
    out = tmp_path / "train"
    run_train_net(repo_root, "faster_rcnn_R50_C4_cpu_bccd.yaml", out, *data)
    results = read_results(out)
    assert set(results) == {"bbox"}
    bbox = {k: float(results["bbox"][k]) for k in ("AP", "AP50", "AP75")}
    assert all(0.0 <= v <= 100.0 for v in bbox.values())
    assert bbox["AP50"] >= bbox["AP75"]
    # --eval-only on the final checkpoint reproduces the numbers of the end of training.
    eval_dir = tmp_path / "eval"
    log = run_train_net(
        repo_root,
        "faster_rcnn_R50_C4_cpu_bccd.yaml",
        eval_dir,
        *data,
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        eval_only=True,
    )
    again = read_results(eval_dir)["bbox"]
    for k, v in bbox.items():
        assert float(again[k]) == pytest.approx(v, abs=1e-6)
    # The load table: every tensor of the trained detector loaded back, none missing.
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    for group in ("backbone", "roi_heads.res5"):
        n = sum(k.startswith(group + ".") for k in state)
        assert n > 0
        assert re.search(rf"\| {re.escape(group)} +\| {n} +\| {n} +\| 0 +\|", log), group


def test_unknown_config_key_fails_at_start_up(repo_root, tmp_path):
    cmd = [
        sys.executable,
        os.path.join(repo_root, "tools", "train_net.py"),
        "--config-file",
        os.path.join(repo_root, "configs", "finetune", "faster_rcnn_R50_C4_cpu_bccd.yaml"),
        "SOLVER.NOT_A_KEY",
        "1",
        "OUTPUT_DIR",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode != 0
    assert "SOLVER.NOT_A_KEY" in proc.stderr
    assert not (tmp_path / "metrics.json").exists()
