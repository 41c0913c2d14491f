"""
SlotCon's and LOCA's learning-rate schedules against their releases' rules, written here from the
release code (not from detpre):

* SlotCon (CVMI-Lab/SlotCon, utils/lr_scheduler.py): GradualWarmupScheduler(multiplier 100) for
  5 epochs, lr = base / 100 * (99 t / W + 1), then CosineAnnealingLR(T_max = (epochs - 5) *
  iters, eta_min 1e-6) over the remaining iterations; iterations per epoch floor(N / B)
  (DataLoader drop_last); base = 1.0 x B / 256 (LARS).
* LOCA (scenic/projects/loca/configs/loca_imnet1k_base16.py with
  scenic/train_lib/lr_schedules.py 'constant * cosine_decay * linear_warmup'): lr = base x
  min(1, t / W) x (alpha + (1 - alpha) (1 + cos(pi (t - W)+ / (T - W))) / 2), alpha 0.01,
  W = 15 epochs, T = 100 epochs, steps per epoch N // B; base 1e-3 x B / 1024.
"""

import math
import os

import pytest
from lr_curve import lr_curve

from detpre.engine import derive_schedule, get_detpre_cfg


def _derived(repo_root, name, num_images, batch, **ssl):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs/pretrain", name))
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SSL.EPOCHS = 20  # a shorter run of the same rule
    for k, v in ssl.items():
        cfg.SSL[k] = v
    return derive_schedule(cfg, num_images)


@pytest.mark.parametrize(
    "name", ["slotcon_R50_C4_800ep_coco.yaml", "slotcon_R50_FPN_800ep_coco.yaml"]
)
def test_slotcon_schedule_is_the_releases(repo_root, name):
    num_images, batch, epochs, warm = 1000, 64, 20, 5
    cfg = _derived(repo_root, name, num_images, batch)
    iters = num_images // batch  # 15: the last 40 images of an epoch are dropped
    assert cfg.SOLVER.MAX_ITER == epochs * iters and cfg.SOLVER.WARMUP_ITERS == warm * iters
    base, eta = 1.0 * batch / 256, 1e-6
    assert cfg.SOLVER.BASE_LR == pytest.approx(base) and cfg.SOLVER.BASE_LR_END == eta
    w, t_max = warm * iters, (epochs - warm) * iters
    release = [
        (
            base / 100 * (99 * t / w + 1)
            if t <= w
            else eta + (base - eta) * (1 + math.cos(math.pi * (t - w) / t_max)) / 2
        )
        for t in range(epochs * iters)
    ]
    ours = lr_curve(cfg)
    assert max(abs(a - b) for a, b in zip(ours, release)) < 1e-9 * base + 1e-12


@pytest.mark.parametrize(
    "name",
    [
        "loca_ViT_B_100ep_imagenet.yaml",
        "loca_R50_C4_100ep_imagenet.yaml",
        "loca_R50_FPN_100ep_imagenet.yaml",
    ],
)
def test_loca_schedule_is_the_releases(repo_root, name):
    num_images, batch, epochs, warm = 5000, 256, 20, 15 * 20 / 100
    # 15 % of the run warms up, as 15 of 100 epochs
    cfg = _derived(repo_root, name, num_images, batch, WARMUP_EPOCHS=warm)
    iters = num_images // batch  # 19
    total, w = epochs * iters, round(warm * iters)
    assert cfg.SOLVER.MAX_ITER == total and cfg.SOLVER.WARMUP_ITERS == w
    base = 1e-3 * batch / 1024
    assert cfg.SOLVER.BASE_LR == pytest.approx(base)
    alpha = 0.01
    release = [
        base
        * min(1.0, t / w)
        * (alpha + (1 - alpha) * (1 + math.cos(math.pi * max(0, t - w) / (total - w))) / 2)
        for t in range(total)
    ]
    ours = lr_curve(cfg)
    assert max(abs(a - b) for a, b in zip(ours, release)) < 1e-9


def test_a_run_shorter_than_its_warmup_keeps_one_cosine_iteration(repo_root):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs/pretrain/loca_R50_FPN_cpu_imagenet_sample.yaml")
    )
    cfg.merge_from_list(["SSL.EPOCHS", "0", "SOLVER.MAX_ITER", "2"])
    derived = derive_schedule(cfg, num_images=250)
    assert derived.SOLVER.RESCALE_INTERVAL and derived.SOLVER.WARMUP_ITERS == 1
    lrs = lr_curve(derived)  # no division by a zero-length cosine
    assert len(lrs) == 2 and lrs[0] == 0.0 and lrs[1] > 0
