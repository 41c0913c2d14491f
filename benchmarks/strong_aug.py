#!/usr/bin/env python
"""
Per-image cost of each strong augmentation preset (none, S1-S4) on real images, one thread.

Each preset augments the decoded images of a dataset and transforms their annotations (boxes and
polygons), as a training DatasetMapper does after decoding; decoding is done once beforehand and
not timed. Rounds alternate the preset order so machine noise hits all alike. It prints the median
ms/image over the rounds and the ratio to "none" (Detectron2's ResizeShortestEdge + flip).

    python benchmarks/strong_aug.py
    python benchmarks/strong_aug.py --images 50 --rounds 7 --image-size 640

Other benchmarks import ``preset_costs`` (ms/image per preset) or ``time_presets``.
"""

import argparse
import copy
import random
import statistics
import time

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

import detpre.data.datasets  # noqa: F401  registers coco_tiny_train
from detpre.data.transforms import STRONG_AUG_PRESETS, build_strong_augmentation_preset

DEFAULT_DATASET = "coco_tiny_train"


def load_samples(dataset=DEFAULT_DATASET, num_images=16, image_format="BGR"):
    """
    Decode the first images of a registered dataset.

    Args:
        dataset (str): a registered dataset name.
        num_images (int): how many images.
        image_format (str): "BGR" or "RGB".

    Returns:
        list[tuple[ndarray, list[dict]]]: (H, W, 3) uint8 images with their annotations.
    """
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"Dataset {dataset!r} is not registered (set $DETECTRON2_DATASETS)")
    dicts = DatasetCatalog.get(dataset)[:num_images]
    return [
        (utils.read_image(d["file_name"], image_format), d.get("annotations", [])) for d in dicts
    ]


def _augment(augs, samples):
    for image, annos in samples:
        inp = T.AugInput(image)
        tfms = T.AugmentationList(augs)(inp)
        shape = inp.image.shape[:2]
        for ann in annos:
            if not ann.get("iscrowd", 0):
                utils.transform_instance_annotations(copy.deepcopy(ann), tfms, shape)


def time_presets(samples, presets=STRONG_AUG_PRESETS, *, rounds=5, seed=0, **preset_kwargs):
    """
    Median seconds per image of each preset over ``rounds`` passes over ``samples``.

    Args:
        samples (list[tuple[ndarray, list[dict]]]): from ``load_samples``.
        presets (tuple[str]): names of ``STRONG_AUG_PRESETS``.
        rounds (int): timed passes per preset (after one untimed warm-up pass on 2 images).
        seed (int): NumPy / Python seed.
        preset_kwargs: keyword arguments of ``build_strong_augmentation_preset`` (image_size, ...).

    Returns:
        dict[str, float]: preset -> seconds per image (median over rounds).
    """
    np.random.seed(seed)
    random.seed(seed)
    augs = {p: build_strong_augmentation_preset(p, **preset_kwargs) for p in presets}
    for a in augs.values():
        _augment(a, samples[:2])
    times = {p: [] for p in presets}
    for r in range(rounds):
        for p in presets if r % 2 == 0 else tuple(reversed(presets)):
            start = time.perf_counter()
            _augment(augs[p], samples)
            times[p].append((time.perf_counter() - start) / len(samples))
    return {p: statistics.median(t) for p, t in times.items()}


def preset_costs(num_images=16, dataset=DEFAULT_DATASET, rounds=5, image_size=1024):
    """
    Milliseconds per image of every preset on one thread (as a data-loader worker).

    Args:
        num_images (int): images of ``dataset`` per round.
        dataset (str): a registered dataset name.
        rounds (int): timed rounds; the median is returned.
        image_size (int): output side of S1-S4.

    Returns:
        dict[str, float]: preset -> ms per image.
    """
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    samples = load_samples(dataset, num_images)
    secs = time_presets(samples, rounds=rounds, image_size=image_size)
    return {p: s * 1e3 for p, s in secs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="a registered dataset name")
    parser.add_argument("--images", type=int, default=32, help="images per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per preset")
    parser.add_argument("--image-size", type=int, default=1024, help="output side of S1-S4")
    args = parser.parse_args()
    ms = preset_costs(args.images, args.dataset, args.rounds, args.image_size)
    print(
        f"dataset {args.dataset}: {args.images} images x {args.rounds} rounds, 1 thread, "
        f"S1-S4 output {args.image_size}x{args.image_size}, none = ResizeShortestEdge(800, 1333)"
    )
    for preset, value in ms.items():
        print(f"{preset:5s} {value:7.2f} ms/img   x{value / ms['none']:.2f} of none")


if __name__ == "__main__":
    main()
