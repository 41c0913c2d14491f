#!/usr/bin/env python
"""
Milliseconds per pretraining step of each method against its baseline (InsLoc against MoCo-v2),
with the same backbone, batch and machine, measured side by side in one run.

A step is what ``tools/pretrain_net.py`` runs per iteration minus data loading: forward, backward
and the SGD step of Detectron2's ``SimpleTrainer`` (``AMPTrainer`` with ``--amp``, as the
pretraining trainer picks), then the momentum update. Each method gets its model and optimizer
from ``PretrainTrainer`` and a fixed list of batches made once by its own pretext mapper, on the
same images in the same order, and moved to the device before timing. Blocks of ``--iters`` steps
alternate between the methods for ``--rounds`` rounds (the order reversed every round), so machine
noise hits all alike; on CPU, torch runs one thread unless ``--threads`` says otherwise. It prints
the median ms/iter and images/s (samples of two views) of each method and, per backbone, the ratio
method / baseline (targets: InsLoc / MoCo-v2 <= 1.15 on R50-C4, <= 1.30 on R50-FPN). SlotCon and LOCA are
compared with MoCo-v2; AlignDet with a supervised Mask R-CNN step on the same images (run
``tools/prepare_proposals.py --dataset coco_tiny_train`` first).

    python benchmarks/pretrain_step.py
    python benchmarks/pretrain_step.py --backbones FPN --batch-size 32 --amp --channels-last
    python benchmarks/pretrain_step.py --rounds 6 SSL.QUEUE_SIZE 65536
"""

import argparse
import itertools
import os
import statistics
import time
from typing import Dict, NamedTuple, Optional

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from detpre.data.build import build_pretrain_mapper, get_pretrain_dicts
from detpre.data.datasets import register_from_config
from detpre.engine import PretrainTrainer, derive_schedule, get_detpre_cfg

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Pretraining recipes: the CPU configs (128-px views) and the published GPU ones.
RECIPES = {"cpu": "cpu_imagenet_sample", "cuda": "200ep_imagenet"}
DEFAULT_DATASET = "imagenet_sample_unlabeled"
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}


class Method(NamedTuple):
    """One row of the benchmark."""

    name: str
    # Under configs/, with the {backbone} (C4, FPN) and {recipe} (see RECIPES) fields.
    config: str
    # The method it is compared with (a name in METHODS), or None.
    baseline: Optional[str] = None
    # Backbone -> the highest acceptable ms/iter ratio to the baseline.
    targets: Optional[Dict[str, float]] = None
    # Device -> config suffix, where the method's recipes are not RECIPES.
    recipes: Optional[Dict[str, str]] = None
    # The dataset it runs on instead of --dataset (e.g. a proposals dataset).
    dataset: Optional[str] = None
    # A supervised detector step (Detectron2's DatasetMapper on labeled images, no momentum).
    supervised: bool = False


METHODS = (
    Method("MoCo-v2", "pretrain/moco_v2_R50_{backbone}_{recipe}.yaml"),
    Method(
        "InsLoc",
        "pretrain/insloc_R50_{backbone}_{recipe}.yaml",
        "MoCo-v2",
        {"C4": 1.15, "FPN": 1.30},
    ),
    Method("SlotCon", "pretrain/slotcon_R50_{backbone}_{recipe}.yaml", "MoCo-v2"),
    Method(
        "LOCA",
        "pretrain/loca_R50_{backbone}_{recipe}.yaml",
        "MoCo-v2",
        recipes={"cpu": "cpu_imagenet_sample", "cuda": "100ep_imagenet"},
    ),
    # AlignDet against a supervised Mask R-CNN step on the same images (coco_tiny_train) at the
    # same input sizes. Its proposals come first:
    #   python tools/prepare_proposals.py --dataset coco_tiny_train --preset aligndet
    Method(
        "MaskRCNN",
        "finetune/mask_rcnn_R50_{backbone}_cpu_coco_tiny.yaml",
        dataset="coco_tiny_train",
        supervised=True,
    ),
    Method(
        "AlignDet",
        "pretrain/aligndet_R50_{backbone}_{recipe}.yaml",
        "MaskRCNN",
        recipes={"cpu": "cpu_coco", "cuda": "12ep_coco"},
        dataset="coco_tiny_train_proposals_aligndet",
    ),
)


def to_device(obj, device):
    """
    Args:
        obj: a batch: dicts, lists and tuples of tensors, ``Boxes`` and other values.
        device (torch.device): where the tensors and boxes go.

    Returns:
        the same structure with every tensor and ``Boxes`` on ``device``.
    """
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if hasattr(obj, "to") and not isinstance(obj, str):
        return obj.to(device)
    return obj


def build_cfg(method, backbone, args):
    """
    The pretraining config of one method and backbone with the benchmark's settings.

    Args:
        method (Method): the row.
        backbone (str): "C4" or "FPN".
        args (argparse.Namespace): device, recipe, dataset, batch size, AMP and KEY VALUE opts.

    Returns:
        CfgNode: frozen, with the schedule derived as ``PretrainTrainer`` does.
    """
    recipe = (method.recipes or {}).get(args.device, args.recipe)
    path = os.path.join(CONFIG_DIR, method.config.format(backbone=backbone, recipe=recipe))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{method.name} R50-{backbone}: no config {path}")
    cfg = get_detpre_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = args.device
    cfg.DATASETS.TRAIN = (method.dataset or args.dataset,)
    cfg.SOLVER.IMS_PER_BATCH = args.batch_size
    cfg.SOLVER.AMP.ENABLED = args.amp
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    register_from_config(cfg)
    if method.supervised:
        return cfg
    num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
    return derive_schedule(cfg, num_images)


def build_batches(cfg, num_batches, supervised=False):
    """
    Batches from the method's pretext mapper, over the training images in order (skipped images
    replaced by the next ones), on ``cfg.MODEL.DEVICE``.

    Args:
        cfg (CfgNode): the method's pretraining config (``SSL.MAPPER``, ``DATASETS.TRAIN``).
        num_batches (int): how many batches to build.

    Returns:
        list[list[dict]]: ``num_batches`` lists of ``cfg.SOLVER.IMS_PER_BATCH`` mapped inputs.
    """
    seed_all_rng(0)
    if supervised:
        dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
        mapper = DatasetMapper(cfg, is_train=True)
    else:
        dicts = get_pretrain_dicts(cfg)
        mapper = build_pretrain_mapper(cfg, dicts)
    needed = num_batches * cfg.SOLVER.IMS_PER_BATCH
    inputs = []
    for i, d in enumerate(itertools.cycle(dicts)):
        if len(inputs) == needed:
            break
        if i >= 2 * needed + len(dicts):
            raise RuntimeError(f"{cfg.SSL.MAPPER} skipped most images of {cfg.DATASETS.TRAIN}")
        x = mapper(d)
        if x is not None:
            inputs.append(to_device(x, torch.device(cfg.MODEL.DEVICE)))
    size = cfg.SOLVER.IMS_PER_BATCH
    return [inputs[i : i + size] for i in range(0, needed, size)]


class StepRunner:
    """A method's model, optimizer and batches, stepped as the pretraining trainer does."""

    def __init__(self, cfg, num_batches, channels_last=False, supervised=False):
        self.batches = build_batches(cfg, num_batches, supervised)
        self.supervised = supervised
        seed_all_rng(0)
        model = PretrainTrainer.build_model(cfg)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        optimizer = PretrainTrainer.build_optimizer(cfg, model)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self.trainer = trainer_cls(model, itertools.cycle(self.batches), optimizer)
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model_momentum = cfg.SSL.MOMENTUM

    def step(self):
        self.trainer.run_step()
        if not self.supervised:
            self.model.momentum_update(self.model_momentum)
        self.trainer.iter += 1

    def time_block(self, n):
        """
        Args:
            n (int): steps to run, CUDA synchronised before and after.

        Returns:
            float: milliseconds per step over the ``n`` steps.
        """
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        sync()
        return (time.perf_counter() - t0) * 1e3 / n


def benchmark_backbone(backbone, methods, args):
    """
    Build every method on one backbone, warm each up, then time alternating blocks.

    Args:
        backbone (str): "C4" or "FPN".
        methods (list[Method]): the rows, baselines included.
        args (argparse.Namespace): the command-line settings.

    Returns:
        dict[str, list[float]]: method name -> ms/iter of each round.
    """
    runners = {
        m.name: StepRunner(
            build_cfg(m, backbone, args), args.iters, args.channels_last, m.supervised
        )
        for m in methods
    }
    times = {name: [] for name in runners}
    with EventStorage(0):
        for runner in runners.values():
            if args.warmup > 0:
                runner.time_block(args.warmup)
        names = list(runners)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                times[name].append(runners[name].time_block(args.iters))
    return times


def select_methods(names):
    """The METHODS named (all when ``names`` is empty) and their baselines, in table order."""
    known = {m.name: m for m in METHODS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; known: {sorted(known)}")
    wanted = set(names or known)
    wanted |= {known[n].baseline for n in wanted if known[n].baseline}
    return [m for m in METHODS if m.name in wanted]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["C4", "FPN"], choices=["C4", "FPN"])
    parser.add_argument("--methods", nargs="+", default=[], help="rows to time (default all)")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per method")
    parser.add_argument("--iters", type=int, default=2, help="steps per block (= batches built)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per method first")
    parser.add_argument("--batch-size", type=int, help="SOLVER.IMS_PER_BATCH (8 on CPU, 32 on GPU)")
    parser.add_argument("--recipe", choices=sorted(set(RECIPES.values())), help="config suffix")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="a registered image dataset")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default 1 on CPU, torch's own on CUDA)"
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, all configs")
    args = parser.parse_args()
    for key in ("rounds", "iters", "batch_size", "threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.amp and args.device != "cuda":
        parser.error("--amp needs CUDA (Detectron2's AMPTrainer), and none is available")
    args.recipe = args.recipe or RECIPES[args.device]
    args.batch_size = args.batch_size or DEFAULT_BATCH[args.device]
    if args.threads is None and args.device == "cpu":
        # More threads than free cores makes OpenMP spin: a 2-thread step on 2 busy cores runs
        # several times slower than a 1-thread one, and its time is mostly noise.
        args.threads = 1
    return args


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = select_methods(args.methods)
    precision = "amp fp16" if args.amp else "fp32"
    layout = "channels-last" if args.channels_last else "channels-first"
    print(
        f"device {args.device} ({torch.get_num_threads()} threads), recipe {args.recipe}, "
        f"batch {args.batch_size}, {args.rounds} rounds x {args.iters} iters "
        f"(+{args.warmup} warm-up), {precision}, {layout}"
    )
    print(f"{'backbone':8s} {'method':8s} {'ms/iter':>8s} {'img/s':>7s} {'rounds ms':>15s}  ratio")
    for backbone in args.backbones:
        times = benchmark_backbone(backbone, methods, args)
        median = {name: statistics.median(t) for name, t in times.items()}
        for m in methods:
            ms, t = median[m.name], times[m.name]
            row = (
                f"R50-{backbone:4s} {m.name:8s} {ms:8.1f} {args.batch_size * 1e3 / ms:7.2f} "
                f"{min(t):7.1f}-{max(t):<7.1f}"
            )
            if m.baseline:
                ratio = ms / median[m.baseline]
                row += f"  {ratio:.3f} vs {m.baseline}"
                target = (m.targets or {}).get(backbone)
                if target is not None:
                    row += f" (target <= {target:.2f}: {'ok' if ratio <= target else 'MISSED'})"
            print(row.rstrip(), flush=True)


if __name__ == "__main__":
    main()
