"""The pretext columns of the main job: first / last logged accuracy and loss of a run, and the
chance level of each method's guess."""

import json
import os

import pytest

from detpre.engine import get_detpre_cfg
from detpre.evaluation import chance_level, pretext_summary


def _run(tmp_path, config, records, *opts):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts))
    (tmp_path / "config.yaml").write_text(cfg.dump())
    with open(tmp_path / "metrics.json", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(tmp_path)


def test_insloc_levels_are_averaged_and_chance_is_one_in_queue_plus_one(repo_root, tmp_path):
    config = os.path.join(repo_root, "configs/pretrain/insloc_R50_FPN_cpu_imagenet_sample.yaml")
    records = [
        {"iteration": 2, "total_loss": 20.0, "lr": 0.1},  # a record without the metric
        {"iteration": 4, "total_loss": 19.0, **{f"[metric]insloc/acc_p{i}": 0.1 * i for i in (2, 3, 4, 5)}},  # fmt: skip
        {"iteration": 9, "total_loss": 12.5, **{f"[metric]insloc/acc_p{i}": 0.2 for i in (2, 3, 4, 5)}},  # fmt: skip
    ]
    # A 32-key queue of 32-image batches is full from iteration 1 on: every record counts.
    out = pretext_summary(
        _run(tmp_path, config, records, "SSL.QUEUE_SIZE", "32", "SOLVER.IMS_PER_BATCH", "32")
    )
    assert out["acc_start"] == pytest.approx((0.2 + 0.3 + 0.4 + 0.5) / 4)
    assert out["acc_end"] == pytest.approx(0.2)
    assert out["chance"] == pytest.approx(1 / 33)
    assert (out["loss_start"], out["loss_end"]) == (20.0, 12.5)


def test_the_start_waits_for_a_full_queue(repo_root, tmp_path):
    """MoCo's queue starts as random vectors: a 48-key queue of 16-image batches holds real keys
    from iteration 3 on, so the median logged at iteration 4 (iterations 0-4) is mostly random
    negatives, the one at 9 (0-9) mostly real ones; a 20-iteration window that late is all real."""
    config = os.path.join(repo_root, "configs/pretrain/moco_v2_R50_FPN_cpu_imagenet_sample.yaml")
    records = [
        {"iteration": i, "total_loss": 3.0 + i / 100, "[metric]moco/acc": i / 100}
        for i in (4, 9, 14)
    ]
    opts = ("SSL.QUEUE_SIZE", "48", "SOLVER.IMS_PER_BATCH", "16")
    out = pretext_summary(_run(tmp_path, config, records, *opts))
    assert (out["acc_start"], out["loss_start"]) == (0.09, 3.09)
    assert (out["acc_end"], out["loss_end"]) == (0.14, 3.14)
    # 65536 keys of 256 images: full after 256 iterations; the window of 20 at iteration 266
    # holds 11 full ones, the one at 265 only 10.
    late = [{"iteration": i, "total_loss": float(i)} for i in (255, 265, 266)]
    opts = ("SSL.QUEUE_SIZE", "65536", "SOLVER.IMS_PER_BATCH", "256")
    assert pretext_summary(_run(tmp_path, config, late, *opts))["loss_start"] == 266.0
    # SlotCon has no queue: its first record counts.
    slotcon = os.path.join(repo_root, "configs/pretrain/slotcon_R50_FPN_cpu_imagenet_sample.yaml")
    assert pretext_summary(_run(tmp_path, slotcon, records))["loss_start"] == 3.04


def test_chance_levels(repo_root):
    def cfg(name, *opts):
        c = get_detpre_cfg()
        c.merge_from_file(os.path.join(repo_root, "configs/pretrain", name))
        c.merge_from_list(list(opts))
        return c

    # the CPU config: 112 px reference, 7 x 7 cells; the published one: 14 x 14
    assert chance_level(cfg("loca_R50_FPN_cpu_imagenet_sample.yaml"), {}) == pytest.approx(1 / 49)
    assert chance_level(cfg("loca_R50_FPN_100ep_imagenet.yaml"), {}) == pytest.approx(1 / 196)
    assert chance_level(cfg("loca_ViT_cpu_imagenet_sample.yaml"), {}) == pytest.approx(1 / 196)
    slotcon = cfg("slotcon_R50_FPN_cpu_imagenet_sample.yaml", "SOLVER.IMS_PER_BATCH", "16")
    assert chance_level(slotcon, {"[metric]slotcon/valid_slots": 5.0}) == pytest.approx(1 / 80)
    assert chance_level(slotcon, {}) is None
    moco = cfg("moco_v2_R50_FPN_200ep_imagenet.yaml")
    assert chance_level(moco, {}) == pytest.approx(1 / 65537)


def test_a_run_without_metrics(repo_root, tmp_path):
    config = os.path.join(repo_root, "configs/pretrain/moco_v2_R50_FPN_cpu_imagenet_sample.yaml")
    out = pretext_summary(_run(tmp_path, config, []))
    assert (
        out["metric"] == "[metric]moco/acc" and out["acc_end"] is None and out["loss_end"] is None
    )
