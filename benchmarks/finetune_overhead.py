#!/usr/bin/env python
"""
Seconds per iteration of ``tools/train_net.py``'s trainer (``FinetuneTrainer``) against Detectron2's
plain ``DefaultTrainer`` on the same config, measured side by side in one run.

Both trainers are built from the same config and seed; their steps (hooks included) are run in
alternating blocks, so machine noise hits both alike. It prints the median seconds per iteration of
each and their ratio (FinetuneTrainer / DefaultTrainer; it should stay at or under 1.03).

    python benchmarks/finetune_overhead.py
    python benchmarks/finetune_overhead.py --config-file configs/finetune/faster_rcnn_R50_C4_cpu_bccd.yaml
"""

import argparse
import statistics
import tempfile
import time

import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultTrainer
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from detpre.data.datasets import register_from_config
from detpre.engine import FinetuneTrainer, get_detpre_cfg


def build(trainer_cls, cfg, seed):
    torch.manual_seed(seed)
    trainer = trainer_cls(cfg)
    trainer.storage = EventStorage(0)
    trainer.storage.__enter__()
    trainer.before_train()
    return trainer


def run_block(trainer, start, n):
    """Run ``n`` steps with their hooks; returns the seconds of each."""
    times = []
    for i in range(start, start + n):
        trainer.iter = trainer.storage.iter = i
        t0 = time.perf_counter()
        trainer.before_step()
        trainer.run_step()
        trainer.after_step()
        times.append(time.perf_counter() - t0)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--config-file", default="configs/finetune/mask_rcnn_R50_FPN_cpu_coco_tiny.yaml"
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per trainer")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per trainer first")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    setup_logger(name="detpre")

    cfg = get_detpre_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.OUTPUT_DIR = tempfile.mkdtemp(prefix="finetune_overhead_")
    # No evaluation, checkpoints or PreciseBN inside the timed window: both trainers do the same.
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    cfg.SOLVER.MAX_ITER = 10**6
    # One train scale and in-process loading: the mapper's cost is inside the timed step, and the
    # two trainers' batches differ only in which images they draw, not in their scale.
    cfg.INPUT.MIN_SIZE_TRAIN = (max(cfg.INPUT.MIN_SIZE_TRAIN),)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    register_from_config(cfg)
    DatasetCatalog.get(cfg.DATASETS.TRAIN[0])  # warm the dataset cache out of the timed window

    trainers = {
        "FinetuneTrainer": build(FinetuneTrainer, cfg, 0),
        "DefaultTrainer": build(DefaultTrainer, cfg, 0),
    }
    step = 0
    for trainer in trainers.values():
        run_block(trainer, step, args.warmup)
    step += args.warmup
    times = {name: [] for name in trainers}
    names = list(trainers)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name] += run_block(trainers[name], step, args.iters)
        step += args.iters
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"{name:16s} median {med[name]:.3f} s/iter over {len(t)} steps (mean {statistics.mean(t):.3f})"
        )
    ratio = med["FinetuneTrainer"] / med["DefaultTrainer"]
    print(f"ratio FinetuneTrainer / DefaultTrainer: {ratio:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
