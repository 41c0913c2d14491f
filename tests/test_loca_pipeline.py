"""
End to end on the bundled data: tools/pretrain_net.py runs LOCA (tiny ViT) for 2 iterations and
exports the teacher's ViT, which tools/train_net.py loads into the ViTDet Mask R-CNN and trains.
"""

import os
import subprocess
import sys

import torch
from detectron2.modeling import build_model

from detpre.checkpoint import DetpreCheckpointer
from detpre.engine import get_detpre_cfg

PRETRAIN = [
    "SSL.EPOCHS", "0", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.CHECKPOINT_PERIOD", "100", "SSL.LOG_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0",
    "LOCA.NUM_FOCAL_QUERIES", "3", "SEED", "1",
]  # fmt: skip
# One fine-tuning step at learning rate 0, without evaluation: the loaded weights stay as loaded.
FINETUNE = [
    "SOLVER.MAX_ITER", "1", "SOLVER.BASE_LR", "0.0", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.STEPS", "()",
    "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(192,)",
]  # fmt: skip


def _run(repo_root, tool, config, *opts):
    cmd = [sys.executable, os.path.join(repo_root, "tools", tool), "--config-file"]
    cmd += [os.path.join(repo_root, "configs", config), *opts]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def test_pretrain_export_finetune(repo_root, datasets_root, tmp_path):
    pre = tmp_path / "pretrain"
    log = _run(
        repo_root, "pretrain_net.py", "pretrain/loca_ViT_cpu_imagenet_sample.yaml",
        *PRETRAIN, "OUTPUT_DIR", str(pre),
    )  # fmt: skip
    assert "loss_loca_position" in log and "loss_loca_cluster" in log
    full = torch.load(pre / "model_final.pth", map_location="cpu", weights_only=False)
    assert full["iteration"] == 1
    exported = torch.load(pre / "model_final_d2.pth", map_location="cpu", weights_only=False)
    weights = exported["model"]
    net = {k for k in full["model"] if k.startswith("backbone.net.")}
    assert set(weights) == net
    for k, v in weights.items():  # SSL.EXPORT "momentum": the EMA teacher is handed over
        assert torch.equal(v, full["model"]["momentum." + k])
    assert not all(torch.equal(v, full["model"][k]) for k, v in weights.items())

    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs/finetune/mask_rcnn_ViTDet_tiny_cpu_coco_tiny.yaml")
    )
    checkpointer = DetpreCheckpointer(build_model(cfg))
    checkpointer.load(str(pre / "model_final_d2.pth"))
    row = {r.group: r for r in checkpointer.last_load_report}["backbone"]
    assert row.loaded == len(weights) and row.unexpected == row.mismatched == 0
    assert sum(r.unexpected for r in checkpointer.last_load_report) == 0

    ft = tmp_path / "finetune"
    _run(
        repo_root, "train_net.py", "finetune/mask_rcnn_ViTDet_tiny_cpu_coco_tiny.yaml",
        *FINETUNE, "MODEL.WEIGHTS", str(pre / "model_final_d2.pth"), "OUTPUT_DIR", str(ft),
    )  # fmt: skip
    tuned = torch.load(ft / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    for k, v in weights.items():
        assert torch.equal(tuned[k], v), k
    rel_pos = [k for k in tuned if ".attn.rel_pos_" in k]
    assert len(rel_pos) == 4 and all(torch.all(tuned[k] == 0) for k in rel_pos)  # zero-initialised
