#!/usr/bin/env python
"""
A one-command GPU check of every method at its published per-GPU batch and view sizes, on
synthetic images made in the process (no data set needed): the loss at the first iteration in
float32 and under mixed precision, images/s and peak memory of the training step, and the same
for Mask R-CNN R50-FPN fine-tuning against Detectron2's ``DefaultTrainer``. One table is printed
and written as json.

Per method (row), from its published config (``configs/pretrain/*_{200ep,100ep,12ep}_*``):

* the per-GPU batch is ``SOLVER.IMS_PER_BATCH / 8``: the configs hold the total batch of the
  releases' 8-GPU runs (MoCo-v2 and InsLoc 256 -> 32, SlotCon 512 -> 64, LOCA 1024 -> 128,
  AlignDet 16 -> 2, Mask R-CNN 16 -> 2); on a CPU it is 2. ``--batch-size`` sets every row's;
* ``--batches`` batches are made by the method's own pretext mapper (fine-tuning: the
  ``FinetuneTrainer`` mapper) from the synthetic images (AlignDet reads synthesized proposals:
  the rectangles, jittered copies and random boxes) and moved to the device before timing;
* the loss of the first iteration on the first batch, from the same weights (seed 0) and the same
  draws (seed 1), in float32 (TF32 off) and under ``torch.autocast`` at ``--precision`` with the
  timed layout; their relative difference is checked against ``precision_check.LOSS_TOLERANCE``;
* images/s over ``--iters`` steps after ``--warmup`` steps of the training step of
  ``tools/pretrain_net.py`` (``MixedPrecisionTrainer`` at ``--precision``, channels-last unless
  ``--no-channels-last``, then the momentum update), and ``torch.cuda.max_memory_allocated`` over
  them (reset per row; "-" on a CPU);
* fine-tuning: ``FinetuneTrainer`` (same settings) and ``DefaultTrainer`` as Detectron2 ships it
  (its float16 ``AMPTrainer`` on CUDA, float32 on a CPU, channels-first), each step with its hooks
  on the same batches, and the ratio of their images/s.

The aims (one H100 / H200-class GPU, bfloat16, channels-last): MoCo-v2 R50 >= 1200 img/s, InsLoc
R50-FPN >= 800 img/s (the papers' MoCo-v2 setting ran at about 170 img/s per V100). The defaults
keep the whole check under 8 minutes on one H100; the elapsed time is printed.

    python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --methods MoCo-v2-C4 InsLoc-FPN --precision float16
    python benchmarks/gpu_check.py --device cpu --iters 1 --warmup 0 --methods MoCo-v2-C4
"""

import argparse
import datetime
import gc
import itertools
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import NamedTuple, Optional, Tuple

import detectron2
import numpy as np
import torch
import torchvision
from detectron2.engine import DefaultTrainer
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from detpre.engine import FinetuneTrainer, PretrainTrainer, autocast_dtype, get_detpre_cfg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_overhead import build as build_trainer  # noqa: E402
from precision_check import compare_losses, first_loss  # noqa: E402
from pretrain_step import CONFIG_DIR, StepRunner, build_batches, load_cfg, with_schedule  # noqa
from synthetic_data import SyntheticDatasets  # noqa: E402

# The releases' GPUs: each config's SOLVER.IMS_PER_BATCH is the total batch over them.
RELEASE_GPUS = 8
CPU_BATCH = 2


class Row(NamedTuple):
    """One method of the check."""

    key: str  # its --methods name
    name: str
    config: str  # under configs/
    aim: Optional[float] = None  # img/s on one H100 / H200-class GPU
    opts: Tuple[str, ...] = ()
    proposals: bool = False  # trains on the proposals dataset (AlignDet)
    finetune: bool = False  # FinetuneTrainer against DefaultTrainer


ROWS = (
    Row("MoCo-v2-C4", "MoCo-v2 R50-C4", "pretrain/moco_v2_R50_C4_200ep_imagenet.yaml", 1200),
    Row("MoCo-v2-FPN", "MoCo-v2 R50-FPN", "pretrain/moco_v2_R50_FPN_200ep_imagenet.yaml", 1200),
    Row("InsLoc-C4", "InsLoc R50-C4", "pretrain/insloc_R50_C4_200ep_imagenet.yaml"),
    Row("InsLoc-FPN", "InsLoc R50-FPN", "pretrain/insloc_R50_FPN_200ep_imagenet.yaml", 800),
    Row("SlotCon-FPN", "SlotCon R50-FPN", "pretrain/slotcon_R50_FPN_200ep_imagenet.yaml"),
    Row("LOCA-ViT", "LOCA ViT-B/16", "pretrain/loca_ViT_B_100ep_imagenet.yaml"),
    Row("LOCA-FPN", "LOCA R50-FPN", "pretrain/loca_R50_FPN_100ep_imagenet.yaml"),
    # A random backbone frozen: the timing of the published stage, whose weights come first.
    Row(
        "AlignDet-FPN",
        "AlignDet R50-FPN",
        "pretrain/aligndet_R50_FPN_12ep_coco.yaml",
        opts=("ALIGNDET.ALLOW_RANDOM_FROZEN_BACKBONE", "True"),
        proposals=True,
    ),
    Row(
        "MaskRCNN-FPN",
        "Mask R-CNN R50-FPN",
        "finetune/mask_rcnn_R50_FPN_1x_coco.yaml",
        finetune=True,
    ),
)
# Fine-tuning outside the timed window, the same for both trainers: no evaluation, checkpoint or
# PreciseBN, batches given in place of the loader.
FINETUNE_OPTS = (
    "TEST.EVAL_PERIOD", "0", "TEST.PRECISE_BN.ENABLED", "False",
    "SOLVER.CHECKPOINT_PERIOD", "1000000000", "SOLVER.MAX_ITER", "1000000",
    "DATALOADER.NUM_WORKERS", "0",
)  # fmt: skip


def release_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device):
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def batch_size(row, args):
    """
    Args:
        row (Row): the method.
        args (argparse.Namespace): ``batch_size`` (None: derived) and ``device``.

    Returns:
        int: ``--batch-size``, else CPU_BATCH on a CPU, else the config's SOLVER.IMS_PER_BATCH
        over RELEASE_GPUS.
    """
    if args.batch_size:
        return args.batch_size
    if args.device == "cpu":
        return CPU_BATCH
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(CONFIG_DIR, row.config))
    return max(1, cfg.SOLVER.IMS_PER_BATCH // RELEASE_GPUS)


def pretext_rows(row, args, data):
    """
    The loss check and timed steps of one pretraining method.

    Args:
        row (Row): the method.
        args (argparse.Namespace): the settings.
        data (SyntheticDatasets): the registered synthetic datasets.

    Returns:
        list[dict]: one result.
    """
    start = time.perf_counter()
    path = os.path.join(CONFIG_DIR, row.config)
    dataset = data.proposals if row.proposals else data.objects
    batch, opts = batch_size(row, args), list(row.opts) + list(args.opts)
    cfg32 = with_schedule(load_cfg(path, args.device, dataset, batch, opts=opts))
    cfg = load_cfg(path, args.device, dataset, batch, args.precision, args.channels_last, opts)
    cfg = with_schedule(cfg)
    batches = build_batches(cfg32, args.batches)
    seed_all_rng(args.seed)
    model = PretrainTrainer.build_model(cfg32)
    dtype = autocast_dtype(args.precision)
    loss32 = first_loss(model, batches[0])
    loss_amp = first_loss(model, batches[0], dtype, args.channels_last)
    result = compare_losses(loss32, loss_amp, args.precision)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = StepRunner(cfg, batches, model=model)
    release_memory()
    reset_peak_memory(args.device)
    with EventStorage(0):
        if args.warmup:
            runner.time_block(args.warmup)
        ms = runner.time_block(args.iters)
    result.update(batch=batch, ms_per_iter=ms, img_per_s=batch * 1e3 / ms)
    result.update(peak_memory_gib=peak_memory_gib(args.device), trainer="MixedPrecisionTrainer")
    return [dict(result, seconds=time.perf_counter() - start)]


def time_trainer(trainer, batches, args):
    """
    Args:
        trainer (DefaultTrainer): a trainer after ``before_train``, inside its EventStorage.
        batches (list[list[dict]]): its inputs, cycled in place of its data loader.
        args (argparse.Namespace): ``warmup``, ``iters`` and ``device``.

    Returns:
        float: ms per step (hooks included) over the ``iters`` steps after ``warmup``.
    """
    trainer._trainer.data_loader = itertools.cycle(batches)
    trainer._trainer._data_loader_iter_obj = None
    reset_peak_memory(args.device)
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            synchronize(args.device)
            t0 = time.perf_counter()
        trainer.iter = trainer.storage.iter = i
        trainer.before_step()
        trainer.run_step()
        trainer.after_step()
    synchronize(args.device)
    return (time.perf_counter() - t0) * 1e3 / args.iters


def finetune_rows(row, args, data):
    """
    ``FinetuneTrainer`` (loss check, timed steps at the check's settings) and Detectron2's
    ``DefaultTrainer`` (its float16 ``AMPTrainer`` on CUDA, float32 on a CPU; channels-first),
    built from the same config and seed, stepped on the same batches.

    Returns:
        list[dict]: FinetuneTrainer's result (with its images/s over DefaultTrainer's), then
        DefaultTrainer's.
    """
    path = os.path.join(CONFIG_DIR, row.config)
    batch, opts = batch_size(row, args), list(FINETUNE_OPTS) + list(row.opts) + list(args.opts)
    settings = {
        FinetuneTrainer: (args.precision, args.channels_last),
        DefaultTrainer: ("float16" if args.device == "cuda" else "float32", False),
    }
    results, batches = [], None
    for trainer_cls, (precision, channels_last) in settings.items():
        start = time.perf_counter()
        cfg = load_cfg(path, args.device, data.objects, batch, precision, channels_last, opts)
        cfg.OUTPUT_DIR = tempfile.mkdtemp(prefix="finetune_", dir=data.root)
        cfg.freeze()
        if batches is None:
            mapper = FinetuneTrainer.build_train_mapper(cfg)
            batches = build_batches(cfg, args.batches, supervised=True, mapper=mapper)
        trainer = build_trainer(trainer_cls, cfg, args.seed)
        result = {"trainer": trainer_cls.__name__, "precision": precision}
        result["channels_last"] = channels_last
        if trainer_cls is FinetuneTrainer:
            dtype = autocast_dtype(precision)
            loss32 = first_loss(trainer.model, batches[0])
            loss_amp = first_loss(trainer.model, batches[0], dtype, channels_last)
            result.update(compare_losses(loss32, loss_amp, precision))
        ms = time_trainer(trainer, batches, args)
        result.update(batch=batch, ms_per_iter=ms, img_per_s=batch * 1e3 / ms)
        result["peak_memory_gib"] = peak_memory_gib(args.device)
        trainer.storage.__exit__(None, None, None)
        del trainer
        release_memory()
        results.append(dict(result, seconds=time.perf_counter() - start))
    results[0]["speedup_vs_default_trainer"] = results[0]["img_per_s"] / results[1]["img_per_s"]
    return results


def run_row(row, args, data):
    """
    Args:
        row (Row): the method.
        args (argparse.Namespace): the settings.
        data (SyntheticDatasets): the registered synthetic datasets.

    Returns:
        list[dict]: one result per table line (fine-tuning: FinetuneTrainer, DefaultTrainer)
        with the row's names, config and aim; an "error" in place of the figures on failure.
    """
    base = {"method": row.key, "name": row.name, "config": os.path.join("configs", row.config)}
    base.update(precision=args.precision, channels_last=args.channels_last)
    start = time.perf_counter()
    try:
        results = (finetune_rows if row.finetune else pretext_rows)(row, args, data)
    except Exception as e:  # reported in the table; the next rows still run
        traceback.print_exc()
        results = [{"error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - start}]
    release_memory()
    out = []
    for i, result in enumerate(results):
        r = dict(base, **result, aim_img_per_s=row.aim if i == 0 else None, aim_met=None)
        if row.finetune and "trainer" in r:
            r["name"] = f"{row.name} ({r['trainer']})"
        if r["aim_img_per_s"] and args.device == "cuda" and "img_per_s" in r:
            r["aim_met"] = r["img_per_s"] >= r["aim_img_per_s"]
        out.append(r)
    return out


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "detectron2": detectron2.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def format_line(r):
    """One table line of a result dict."""
    if "error" in r:
        return f"{r['name']:38s} FAILED after {r['seconds']:.0f} s: {r['error'][:300]}"
    fields = [f"{r['name']:38s} {r['batch']:5d}"]
    if "loss_float32" in r:
        ok = "ok" if r["loss_ok"] else "CHECK"
        fields.append(f"{r['loss_float32']:9.4f} {r['loss_amp']:9.4f}")
        fields.append(f"{100 * r['loss_rel_diff']:7.3f}% {ok:5s}")
    else:
        fields.append(f"{'-':>9s} {'-':>9s} {'-':>8s} {'':5s}")
    peak = r["peak_memory_gib"]
    fields.append(f"{r['img_per_s']:8.1f} {r['ms_per_iter']:8.1f}")
    fields.append(f"{peak:8.2f}" if peak is not None else f"{'-':>8s}")
    fields.append(f"{r['seconds']:5.0f}")
    if r["aim_img_per_s"]:
        status = {True: "ok", False: "MISSED", None: "n/a off CUDA"}[r["aim_met"]]
        fields.append(f" aim >= {r['aim_img_per_s']:.0f} img/s: {status}")
    if "speedup_vs_default_trainer" in r:
        fields.append(f" {r['speedup_vs_default_trainer']:.3f} x DefaultTrainer's img/s")
    return " ".join(fields)


def print_table(rows, precision):
    half = {"bfloat16": "bf16", "float16": "fp16"}[precision]
    print(
        f"{'method':38s} {'batch':>5s} {'loss fp32':>9s} {'loss ' + half:>9s} {'rel.diff':>8s} "
        f"{'':5s} {'img/s':>8s} {'ms/iter':>8s} {'peak GiB':>8s} {'s':>5s}"
    )
    for r in rows:
        print(format_line(r))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    keys = [r.key for r in ROWS]
    parser.add_argument("--methods", nargs="+", choices=keys, default=keys, help="rows to run")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if available")
    parser.add_argument("--precision", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True, help="timed layout"
    )
    parser.add_argument("--cudnn-benchmark", action="store_true", help="cudnn autotuner on")
    parser.add_argument("--warmup", type=int, help="untimed steps per row (5 on CUDA, 1 on CPU)")
    parser.add_argument("--iters", type=int, help="timed steps per row (20 on CUDA, 2 on CPU)")
    parser.add_argument("--batch-size", type=int, help="every row's batch (default: see above)")
    parser.add_argument("--batches", type=int, default=2, help="distinct batches per row, cycled")
    parser.add_argument("--images", type=int, help="synthetic images (64 on CUDA, 8 on CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and the weights")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1 on CPU)")
    parser.add_argument("--output", default="gpu_check.json", help="the json file to write")
    parser.add_argument("--verbose", action="store_true", help="keep Detectron2's INFO logs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, all configs")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (try --device cpu --iters 1)")
    on_cuda = args.device == "cuda"
    defaults = {"warmup": 5 if on_cuda else 1, "iters": 20 if on_cuda else 2}
    defaults.update(images=64 if on_cuda else 8, threads=None if on_cuda else 1)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("iters", "batch_size", "batches", "images", "threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    args.batches = min(args.batches, args.warmup + args.iters)
    return args


def quiet_logs():
    """Detectron2's and detpre's loggers at WARNING (the trainers would print the model)."""
    setup_logger()  # cached: the trainers' own call then keeps these levels
    for name in ("detectron2", "detpre", "fvcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if not args.verbose:
        quiet_logs()
    layout = "channels-last" if args.channels_last else "channels-first"
    print(
        f"gpu_check on {device_name(args.device)}: {args.precision} autocast, {layout}, "
        f"{args.warmup} warm-up + {args.iters} timed steps per row, {args.images} synthetic images",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as root:
        data = SyntheticDatasets(root, args.images, args.seed, prefix=f"gpu_check_{os.getpid()}")
        try:
            for row in ROWS:
                if row.key in args.methods:
                    rows += run_row(row, args, data)
        finally:
            data.remove()
    elapsed = time.perf_counter() - start
    print_table(rows, args.precision)
    print(f"elapsed {elapsed:.0f} s ({elapsed / 60:.1f} min)")
    report = {
        "device": device_name(args.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "verbose")},
        "elapsed_s": elapsed,
        "rows": rows,
    }
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"written to {args.output}")
    return 1 if any("error" in r or not r.get("loss_ok", True) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
