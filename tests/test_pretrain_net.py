"""tools/pretrain_net.py: schedule, export that loads into fine-tuning, kill and resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.modeling import build_model

from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.export import FinetuneExporter
from detpre.engine import PretrainTrainer, derive_schedule, get_detpre_cfg

# A pretraining run small enough for a CPU test: 64-pixel views, 4 images, a 64-entry queue.
TINY = [
    "SSL.EPOCHS", "0", "SOLVER.MAX_ITER", "6", "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.CHECKPOINT_PERIOD", "2", "SSL.QUEUE_SIZE", "64", "SSL.LOG_PERIOD", "1",
    "INSLOC.BACKGROUND_SIZE", "64", "INSLOC.PASTE_SIZE_RANGE", "(24, 48)",
    "INSLOC.BOX_AUG_SIZES", "(16, 32)", "DATALOADER.NUM_WORKERS", "0", "SEED", "1",
]  # fmt: skip


def pretrain_cfg(repo_root, name, out_dir, *opts):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs", "pretrain", name))
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(out_dir), *opts])
    cfg.freeze()
    return cfg


def finetune_cfg(repo_root, name):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs", "finetune", name))
    return cfg


def test_derive_schedule_epochs_and_linear_lr(repo_root):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs/pretrain/insloc_R50_FPN_200ep_imagenet.yaml")
    )
    derived = derive_schedule(cfg, num_images=1281167)
    # 200 epochs of ImageNet-1k at 256 images: ceil(1281167 / 256) = 5005 iterations an epoch.
    assert derived.SOLVER.MAX_ITER == 200 * -(-1281167 // 256)
    assert derived.SOLVER.BASE_LR == pytest.approx(0.03)
    cfg.SOLVER.IMS_PER_BATCH = 512
    derived = derive_schedule(cfg, num_images=1000)
    assert derived.SOLVER.BASE_LR == pytest.approx(0.06)
    assert derived.SOLVER.MAX_ITER == 200 * 2
    assert derived.SOLVER.LR_SCHEDULER_NAME == "WarmupCosineLR" and derived.SOLVER.NESTEROV
    assert derived.SOLVER.BASE_LR_END == 0.0


@pytest.mark.parametrize(
    "pretrain,finetune,groups",
    [
        (
            "insloc_R50_FPN_cpu_imagenet_sample.yaml",
            "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml",
            ("backbone.bottom_up", "backbone.fpn", "roi_heads.box_head"),
        ),
        (
            "insloc_R50_C4_cpu_imagenet_sample.yaml",
            "faster_rcnn_R50_C4_cpu_bccd.yaml",
            ("backbone", "roi_heads.res5"),
        ),
        (
            "moco_v2_R50_FPN_cpu_imagenet_sample.yaml",
            "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml",
            ("backbone.bottom_up",),
        ),
        (
            "insloc_R50_FPN_cpu_imagenet_sample.yaml",
            "mask_rcnn_R50_FPN_cpu_coco_tiny_insloc.yaml",
            ("backbone.bottom_up", "backbone.fpn", "roi_heads.box_head"),
        ),
    ],
)
def test_exported_weights_load_into_finetuning(repo_root, tmp_path, pretrain, finetune, groups):
    cfg = pretrain_cfg(repo_root, pretrain, tmp_path)
    model = build_model(cfg)
    with torch.no_grad():  # make the online and momentum copies differ, to check which is exported
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    path = str(tmp_path / "export_d2.pth")
    excluded = getattr(model, "export_excluded_prefixes", ())
    report = FinetuneExporter(cfg)(model.state_dict(), path, excluded=excluded)
    exported = torch.load(path, map_location="cpu", weights_only=False)
    assert exported["__author__"] == "detpre" and exported["matching_heuristics"] is False
    keys = set(exported["model"])
    assert not any(k.startswith(("momentum.", "queues.", "ssl_head.")) for k in keys)
    assert report["num_exported"] == len(keys)
    state = model.state_dict()
    for k in keys:
        assert torch.equal(exported["model"][k], state[k])  # the online (query) encoder

    ft_model = build_model(finetune_cfg(repo_root, finetune))
    checkpointer = DetpreCheckpointer(ft_model)
    checkpointer.load(path)
    rows = {row.group: row for row in checkpointer.last_load_report}
    ft_state = ft_model.state_dict()
    for group in groups:
        row = rows[group]
        assert row.loaded > 0 and row.mismatched == 0 and row.unexpected == 0, row
        # The extra norms of the fine-tuning heads (Res5ROIHeadsExtraNorm, InsLoc's
        # FastRCNNConvFCHeadExtraNorm) are new in fine-tuning: nothing else may be missing.
        extra_norm = ("roi_heads.res5.norm.", "roi_heads.box_head.fc_extra_norm.")
        new = sum(k.startswith(extra_norm) and k.startswith(group) for k in ft_state)
        assert row.missing == new, row
    assert sum(row.unexpected for row in rows.values()) == 0
    assert sum(row.loaded for row in rows.values()) == len(keys)
    for k in keys:
        assert torch.equal(ft_state[k], exported["model"][k])
    if pretrain.startswith("moco_v2_R50_FPN"):
        # MoCo-v2 trains the bottom-up ResNet only: the FPN is not exported, and the load
        # report shows it as initialised by fine-tuning, not as loaded.
        fpn = [k for k in ft_state if k.startswith("backbone.fpn_")]
        assert fpn and not any(k.startswith("backbone.fpn_") for k in keys)
        assert sorted(report["excluded"]) == sorted(fpn)
        assert rows["backbone.fpn"].loaded == 0 and rows["backbone.fpn"].missing == len(fpn)


def test_resume_restores_queue_optimizer_and_iteration(repo_root, tmp_path):
    first = tmp_path / "first"
    keep = ("SOLVER.CHECKPOINT_MAX_TO_KEEP", "2")  # 3 and 5 of the checkpoints at 1, 3, 5
    cfg = pretrain_cfg(repo_root, "insloc_R50_C4_cpu_imagenet_sample.yaml", first, *keep)
    trainer = PretrainTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (first / "model_0000003.pth").exists() and (first / "model_0000003_d2.pth").exists()
    assert (
        not (first / "model_0000001.pth").exists() and not (first / "model_0000001_d2.pth").exists()
    )
    assert (first / "model_final_d2.pth").exists()

    # A run killed after its checkpoint at iteration 3: only that checkpoint is left.
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "model_0000003.pth", second)
    (second / "last_checkpoint").write_text("model_0000003.pth")
    saved = torch.load(second / "model_0000003.pth", map_location="cpu", weights_only=False)
    resumed = PretrainTrainer(
        pretrain_cfg(repo_root, "insloc_R50_C4_cpu_imagenet_sample.yaml", second)
    )
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4 and saved["iteration"] == 3
    state = resumed.model.state_dict()
    for key in saved["model"]:
        if key.startswith(("queues.", "momentum.")):
            assert torch.equal(state[key], saved["model"][key]), key
    # Detectron2 stores the trainer's state (optimizer, LR scheduler hook) under "trainer".
    sched = saved["trainer"]["hooks"]["LRScheduler"]
    assert resumed.scheduler.state_dict()["last_epoch"] == sched["last_epoch"] == 4
    saved_opt = saved["trainer"]["_trainer"]["optimizer"]["state"]
    opt_state = resumed.optimizer.state_dict()["state"]
    assert len(saved_opt) == len(opt_state) > 0
    for idx, buf in saved_opt.items():
        assert torch.equal(opt_state[idx]["momentum_buffer"], buf["momentum_buffer"])
    resumed.train()
    final = torch.load(second / "model_final.pth", map_location="cpu", weights_only=False)
    first_final = torch.load(first / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == first_final["iteration"] == 5
    # 6 iterations of 4 keys into a 64-entry queue: the pointer is 24 either way.
    assert (
        int(final["model"]["queues.res5.ptr"]) == int(first_final["model"]["queues.res5.ptr"]) == 24
    )


def test_killed_run_resumes_from_last_checkpoint(repo_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(repo_root, "tools", "pretrain_net.py"), "--config-file"]
    cmd += [
        os.path.join(repo_root, "configs", "pretrain", "insloc_R50_C4_cpu_imagenet_sample.yaml")
    ]
    opts = TINY + ["SOLVER.CHECKPOINT_MAX_TO_KEEP", "2", "OUTPUT_DIR", str(out)]
    opts += ["SOLVER.MAX_ITER", "40"]
    proc = subprocess.Popen(
        cmd + opts, cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    tag = out / "last_checkpoint"  # written after the checkpoint it names
    while not (tag.exists() and tag.read_text() >= "model_0000003") and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "last_checkpoint").exists()
    last = (out / "last_checkpoint").read_text().strip()
    killed_at = torch.load(out / last, map_location="cpu", weights_only=False)["iteration"]
    assert killed_at < 39
    # Resume and finish a shorter schedule than the killed one asked for.
    done = subprocess.run(
        cmd + ["--resume"] + opts[:-2] + ["SOLVER.MAX_ITER", str(killed_at + 3)],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stdout + done.stderr
    assert f"Starting training from iteration {killed_at + 1}" in log
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == killed_at + 2
    with open(out / "metrics.json") as f:
        iters = [json.loads(line)["iteration"] for line in f if line.strip()]
    assert iters[-1] == killed_at + 2
    # SOLVER.CHECKPOINT_MAX_TO_KEEP 2 across the kill: the killed run's last checkpoint and the
    # resumed run's one are left (period 2), each with at most its own export.
    periodic = sorted(p.name for p in out.glob("model_???????.pth"))
    assert periodic == [f"model_{killed_at:07d}.pth", f"model_{killed_at + 2:07d}.pth"]
    exports = {p.name.replace("_d2", "") for p in out.glob("model_???????_d2.pth")}
    assert f"model_{killed_at + 2:07d}.pth" in exports and exports <= set(periodic)


def test_two_process_pretraining_gathers_keys(repo_root, tmp_path):
    """--num-gpus 2 on a CPU: two gloo processes, DDP on CPU, keys of both ranks enqueued."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, os.path.join(repo_root, "tools", "pretrain_net.py"), "--num-gpus", "2"]
    # A free port: Detectron2's default one is fixed per user, and other tests launch processes.
    cmd += ["--dist-url", "auto"]
    cmd += [
        "--config-file",
        os.path.join(repo_root, "configs", "pretrain", "moco_v2_R50_FPN_cpu_imagenet_sample.yaml"),
    ]
    opts = TINY + ["SOLVER.MAX_ITER", "2", "MOCO.CROP_SIZE", "64", "OUTPUT_DIR", str(out)]
    # The CPU config's SSL.BN_GROUPS 4 stands in for 4 GPUs on one process; 2 processes of 2
    # images cannot split in 4, and say so at start-up, before any data is read.
    bad = subprocess.run(cmd + opts, cwd=repo_root, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "SSL.BN_GROUPS 4 does not divide the per-process batch of 2" in bad.stderr
    assert "Starting training" not in bad.stdout + bad.stderr
    done = subprocess.run(
        cmd + opts + ["SSL.BN_GROUPS", "1"], cwd=repo_root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    # 2 iterations of 4 images (2 per process): all-gathered keys advance the pointer by 4 each.
    assert int(final["model"]["queues.res5.ptr"]) == 8
    assert (out / "model_final_d2.pth").exists()
