#!/usr/bin/env python
"""
Milliseconds per pretraining step of each method against its baseline, with the same backbone,
batch and machine, measured side by side in one run.

A step is what ``tools/pretrain_net.py`` runs per iteration minus data loading: forward, backward
and the optimizer step of the pretraining trainer's step loop (``DetpreTrainer.build_step_trainer``:
``SimpleTrainer``, or detpre's ``MixedPrecisionTrainer`` at ``--precision`` bfloat16 / float16, on
CUDA or a CPU's autocast), then the momentum update. Each method gets its model (channels-last with
``--channels-last``) and optimizer from ``PretrainTrainer`` and a fixed list of batches made once by
its own pretext mapper, on the same images in the same order, and moved to the device before
timing. Blocks of ``--iters`` steps alternate between the methods for ``--rounds`` rounds (the
order reversed every round), so machine noise hits all alike; on CPU, torch runs one thread unless
``--threads`` says otherwise. It prints the median ms/iter and images/s (samples of two views) of
each method and, per backbone, the ratio method / baseline.

InsLoc's baseline is its own aligned architecture, ``InsLoc-WholeImage`` (InsLoc's Table 3b first
row): the same config, backbone, FPN / C4 head, projection, queues and views (the same composed
views of INSLOC.BACKGROUND_SIZE, so both get identical batches), with ``INSLOC.WHOLE_IMAGE_ROI True`` and
``INSLOC.BOX_AUG False`` (with box augmentation on, the query would pool an anchor jittered around
the whole view, not the whole view). The ratio is what instance localization (the box RoI and its
augmentation) costs per step; target <= 1.10 on R50-C4 and R50-FPN. InsLoc / MoCo-v2 follows as a
second figure: it adds the cost of the detector architecture (MoCo-v2 pools res5 and never runs
the FPN or the box head). SlotCon and LOCA are compared with MoCo-v2; AlignDet with a supervised
Mask R-CNN step on the same images (run ``tools/prepare_proposals.py --dataset coco_tiny_train``
first).

    python benchmarks/pretrain_step.py
    python benchmarks/pretrain_step.py --methods InsLoc --rounds 3 --iters 1
    python benchmarks/pretrain_step.py --backbones FPN --batch-size 32 --precision bfloat16 \
        --channels-last
    python benchmarks/pretrain_step.py --rounds 6 SSL.QUEUE_SIZE 65536
"""

import argparse
import itertools
import os
import statistics
import time
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from detpre.data.build import build_pretrain_mapper, get_pretrain_dicts
from detpre.data.datasets import register_from_config
from detpre.engine import PretrainTrainer, derive_schedule, get_detpre_cfg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
# Pretraining recipes: the CPU configs (128-px views) and the published GPU ones.
RECIPES = {"cpu": "cpu_imagenet_sample", "cuda": "200ep_imagenet"}
DEFAULT_DATASET = "imagenet_sample_unlabeled"
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}
PRECISIONS = ("float32", "bfloat16", "float16")


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
    # KEY VALUE overrides of its config (before the command line's).
    opts: Tuple[str, ...] = ()
    # A second method it is compared with, printed after the baseline's ratio (no target).
    second_baseline: Optional[str] = None


METHODS = (
    Method("MoCo-v2", "pretrain/moco_v2_R50_{backbone}_{recipe}.yaml"),
    # InsLoc's aligned-architecture baseline (its Table 3b first row): InsLoc's config, views and
    # batches, the whole view as the RoI of query and key (so no box augmentation).
    Method(
        "InsLoc-WholeImage",
        "pretrain/insloc_R50_{backbone}_{recipe}.yaml",
        opts=("INSLOC.WHOLE_IMAGE_ROI", "True", "INSLOC.BOX_AUG", "False"),
    ),
    Method(
        "InsLoc",
        "pretrain/insloc_R50_{backbone}_{recipe}.yaml",
        "InsLoc-WholeImage",
        {"C4": 1.10, "FPN": 1.10},
        second_baseline="MoCo-v2",
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


def load_cfg(path, device, dataset, batch_size, precision="float32", channels_last=False, opts=()):
    """
    A config file with a benchmark's settings.

    Args:
        path (str): the YAML file.
        device (str): MODEL.DEVICE.
        dataset (str): the one DATASETS.TRAIN name.
        batch_size (int): SOLVER.IMS_PER_BATCH (the images of one process's step).
        precision (str): "float32", or the mixed precision of ``SOLVER.AMP.PRECISION``.
        channels_last (bool): MODEL.CHANNELS_LAST.
        opts (sequence[str]): KEY VALUE overrides, applied last.

    Returns:
        CfgNode: not frozen; its DATASETS.REGISTER_* entries registered.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config {path}")
    cfg = get_detpre_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = device
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.SOLVER.IMS_PER_BATCH = batch_size
    cfg.SOLVER.AMP.ENABLED = precision != "float32"
    if precision != "float32":
        cfg.SOLVER.AMP.PRECISION = precision
    cfg.MODEL.CHANNELS_LAST = channels_last
    cfg.merge_from_list(list(opts))
    register_from_config(cfg)
    return cfg


def with_schedule(cfg):
    """
    Args:
        cfg (CfgNode): a pretraining config whose DATASETS.TRAIN are registered.

    Returns:
        CfgNode: frozen, with the schedule derived as ``PretrainTrainer`` does.
    """
    num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
    return derive_schedule(cfg, num_images)


def build_cfg(method, backbone, args):
    """
    The pretraining config of one method and backbone with the benchmark's settings.

    Args:
        method (Method): the row.
        backbone (str): "C4" or "FPN".
        args (argparse.Namespace): device, recipe, dataset, batch size, precision, channels-last
            and KEY VALUE opts.

    Returns:
        CfgNode: frozen, with the schedule derived as ``PretrainTrainer`` does.
    """
    recipe = (method.recipes or {}).get(args.device, args.recipe)
    path = os.path.join(CONFIG_DIR, method.config.format(backbone=backbone, recipe=recipe))
    cfg = load_cfg(
        path,
        args.device,
        method.dataset or args.dataset,
        args.batch_size,
        args.precision,
        args.channels_last,
        list(method.opts) + list(args.opts),
    )
    if method.supervised:
        cfg.freeze()
        return cfg
    return with_schedule(cfg)


def build_batches(cfg, num_batches, supervised=False, mapper=None):
    """
    Batches from the method's pretext mapper, over the training images in order (skipped images
    replaced by the next ones), on ``cfg.MODEL.DEVICE``.

    Args:
        cfg (CfgNode): the method's pretraining config (``SSL.MAPPER``, ``DATASETS.TRAIN``).
        num_batches (int): how many batches to build.
        supervised (bool): labeled images through Detectron2's ``DatasetMapper``.
        mapper (callable or None): ``mapper(dataset_dict) -> dict or None`` on the labeled images
            instead of ``DatasetMapper`` (with ``supervised``).

    Returns:
        list[list[dict]]: ``num_batches`` lists of ``cfg.SOLVER.IMS_PER_BATCH`` mapped inputs.
    """
    seed_all_rng(0)
    if supervised:
        dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
        mapper = mapper or DatasetMapper(cfg, is_train=True)
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

    def __init__(self, cfg, batches, supervised=False, model=None):
        """
        Args:
            cfg (CfgNode): the method's config; ``SOLVER.AMP`` picks the step loop
                (``PretrainTrainer.build_step_trainer``), ``MODEL.CHANNELS_LAST`` the layout.
            batches (list[list[dict]]): the inputs, cycled (see :func:`build_batches`).
            supervised (bool): a detector without momentum copy.
            model (nn.Module or None): the model to step (its layout as given); None builds one
                from ``cfg`` with seed 0.
        """
        self.batches = batches
        self.supervised = supervised
        if model is None:
            seed_all_rng(0)
            model = PretrainTrainer.build_model(cfg)
        self.model = model
        optimizer = PretrainTrainer.build_optimizer(cfg, model)
        self.trainer = PretrainTrainer.build_step_trainer(
            cfg, model, itertools.cycle(batches), optimizer
        )
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
    runners = {}
    for m in methods:
        cfg = build_cfg(m, backbone, args)
        runners[m.name] = StepRunner(
            cfg, build_batches(cfg, args.iters, m.supervised), m.supervised
        )
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
    for n in list(wanted):
        wanted |= {b for b in (known[n].baseline, known[n].second_baseline) if b}
    return [m for m in METHODS if m.name in wanted]


def parse_args(argv=None):
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
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="float32, or mixed precision (MixedPrecisionTrainer, SOLVER.AMP.PRECISION)",
    )
    parser.add_argument("--channels-last", action="store_true", help="MODEL.CHANNELS_LAST True")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, all configs")
    args = parser.parse_args(argv)
    for key in ("rounds", "iters", "batch_size", "threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.recipe = args.recipe or RECIPES[args.device]
    args.batch_size = args.batch_size or DEFAULT_BATCH[args.device]
    if args.threads is None and args.device == "cpu":
        # More threads than free cores makes OpenMP spin: a 2-thread step on 2 busy cores runs
        # several times slower than a 1-thread one, and its time is mostly noise.
        args.threads = 1
    return args


def ratio_text(median, method, backbone):
    """
    Args:
        median (dict[str, float]): method name -> median ms/iter.
        method (Method): the row.
        backbone (str): "C4" or "FPN".

    Returns:
        str: "  <ratio> vs <baseline> (target ...)" and the second baseline's ratio, or "".
    """
    text = ""
    if method.baseline:
        ratio = median[method.name] / median[method.baseline]
        text += f"  {ratio:.3f} vs {method.baseline}"
        target = (method.targets or {}).get(backbone)
        if target is not None:
            text += f" (target <= {target:.2f}: {'ok' if ratio <= target else 'MISSED'})"
    if method.second_baseline:
        ratio = median[method.name] / median[method.second_baseline]
        text += f"; {ratio:.3f} vs {method.second_baseline}"
    return text


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = select_methods(args.methods)
    layout = "channels-last" if args.channels_last else "channels-first"
    print(
        f"device {args.device} ({torch.get_num_threads()} threads), recipe {args.recipe}, "
        f"batch {args.batch_size}, {args.rounds} rounds x {args.iters} iters "
        f"(+{args.warmup} warm-up), {args.precision}, {layout}"
    )
    print(f"{'backbone':8s} {'method':17s} {'ms/iter':>8s} {'img/s':>7s} {'rounds ms':>15s}  ratio")
    for backbone in args.backbones:
        times = benchmark_backbone(backbone, methods, args)
        median = {name: statistics.median(t) for name, t in times.items()}
        for m in methods:
            ms, t = median[m.name], times[m.name]
            row = (
                f"R50-{backbone:4s} {m.name:17s} {ms:8.1f} {args.batch_size * 1e3 / ms:7.2f} "
                f"{min(t):7.1f}-{max(t):<7.1f}"
            )
            print((row + ratio_text(median, m, backbone)).rstrip(), flush=True)


if __name__ == "__main__":
    main()
