#!/usr/bin/env python
"""
Images per second per data-loader worker of InsLoc's copy-paste composition mapper against
MoCo-v2's two-crop mapper, over the same images, measured side by side in one process.

Both mappers run single-threaded (torch and OpenCV, as in a loader worker), without a DataLoader,
on the same images in the same order; rounds alternate between them so machine noise hits both
alike. It prints each mapper's images per second (median over rounds) and the ratio InsLoc s/img
/ MoCo s/img (InsLoc decodes three images per sample where MoCo-v2 decodes one; aim <= 1.5).

    python benchmarks/composition.py
    python benchmarks/composition.py --images 100 --rounds 6 --dataset coco_2017_train
"""

import argparse
import glob
import os
import random
import statistics
import time

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

import detpre.data.datasets  # noqa: F401  registers the predefined datasets
from detpre.config import add_detpre_config
from detpre.data.mappers.insloc_composition import InsLocCompositionMapper
from detpre.data.mappers.two_views import TwoCropsMapper

DEFAULT_DATASET = "imagenet_sample_unlabeled"


def glob_imagenet_sample():
    """
    Dataset dicts of ``$DETECTRON2_DATASETS/imagenet_sample/images`` (used when the default name
    is not registered).

    Returns:
        list[dict]: ``{"file_name", "image_id"}`` per image, sorted by file name.
    """
    root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "imagenet_sample")
    files = sorted(glob.glob(os.path.join(root, "images", "*.JPEG")))
    if not files:
        raise FileNotFoundError(f"No *.JPEG under {root}/images: set $DETECTRON2_DATASETS")
    return [{"file_name": f, "image_id": os.path.basename(f)} for f in files]


def load_dicts(name):
    if name in DatasetCatalog.list():
        return DatasetCatalog.get(name)
    if name == DEFAULT_DATASET:
        return glob_imagenet_sample()
    raise KeyError(f"Dataset {name!r} is not registered")


def time_round(mapper, dicts):
    """Seconds per image of ``mapper`` over ``dicts``; skipped (None) images count too."""
    t0 = time.perf_counter()
    for d in dicts:
        mapper(d)
    return (time.perf_counter() - t0) / len(dicts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="a registered dataset name")
    parser.add_argument("--images", type=int, default=64, help="images per round")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per mapper")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    setup_logger(name="detpre")
    # One loader worker: PyTorch sets one thread in workers; OpenCV is pinned here too.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_list(args.opts)
    dicts = load_dicts(args.dataset)
    images = [dicts[i % len(dicts)] for i in range(args.images)]
    mappers = {
        "InsLoc": InsLocCompositionMapper(cfg, dataset_dicts=dicts),
        "MoCo-v2": TwoCropsMapper(cfg, dataset_dicts=dicts),
    }
    for mapper in mappers.values():  # warm-up: imports, allocator, file cache
        time_round(mapper, images[: min(8, len(images))])
    times = {name: [] for name in mappers}
    for r in range(args.rounds):
        order = list(mappers) if r % 2 == 0 else list(reversed(mappers))
        for name in order:
            times[name].append(time_round(mappers[name], images))

    print(f"dataset {args.dataset}: {len(images)} images x {args.rounds} rounds, 1 thread")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, sec in median.items():
        spread = f"{min(times[name]) * 1e3:.2f}-{max(times[name]) * 1e3:.2f}"
        print(f"{name:8s} {1 / sec:7.1f} img/s  ({sec * 1e3:.2f} ms/img, rounds {spread} ms)")
    print(f"ratio InsLoc / MoCo-v2 (s/img): {median['InsLoc'] / median['MoCo-v2']:.2f}")


if __name__ == "__main__":
    main()
