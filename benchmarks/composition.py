#!/usr/bin/env python
"""
Images per second per data-loader worker of every pretext mapper (MoCo-v2, InsLoc, SlotCon, LOCA,
AlignDet's two views) against the reference MoCo-v2 pipeline of MoCo's ``main_moco.py`` (PIL
loader + torchvision transforms: RandomResizedCrop 224, ColorJitter, RandomGrayscale, PIL Gaussian
blur, flip, ToTensor, Normalize; twice per image), measured side by side in one process.

Every pipeline runs single-threaded (torch and OpenCV, as in a loader worker), without a
DataLoader, on the same images in the same order, at the published view sizes (the default
configs); rounds alternate the order of the pipelines so machine noise hits all alike. It prints
each pipeline's images per second (median over rounds), its ratio to the reference (aims: MoCo-v2
>= 1.0, InsLoc >= 0.8; InsLoc decodes three images per sample), the share of images whose JPEG
was decoded at a reduced size (INPUT.SSL_AUG.DRAFT_DECODE), and how many loader workers one GPU
needs at the given GPU rates (default the GPU-check aims; ``--gpu-json`` reads the rates a
``benchmarks/gpu_check.py`` run measured, ``--gpu-rates`` sets them).

    python benchmarks/composition.py
    python benchmarks/composition.py --images 100 --rounds 6 --dataset coco_2017_train
    python benchmarks/composition.py --gpu-json gpu_check.json INPUT.SSL_AUG.DRAFT_DECODE False
    python benchmarks/composition.py --mappers MoCo-v2 InsLoc -- INPUT.SSL_AUG.DRAFT_DECODE False
"""

import argparse
import glob
import json
import math
import os
import random
import statistics
import time

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger
from PIL import Image, ImageFilter
from torchvision import transforms

import detpre.data.datasets  # noqa: F401  registers the predefined datasets
from detpre.data.build import PRETRAIN_MAPPER_REGISTRY
from detpre.data.image_io import ImageFile
from detpre.engine import get_detpre_cfg

DEFAULT_DATASET = "imagenet_sample_unlabeled"
# name -> (SSL.MAPPER, aim as a ratio to the reference (None: no aim)).
MAPPERS = {
    "MoCo-v2": ("TwoCropsMapper", 1.0),
    "InsLoc": ("InsLocCompositionMapper", 0.8),
    "SlotCon": ("SlotConViewsMapper", None),
    "LOCA": ("LocaViewsMapper", None),
    "AlignDet": ("BoxDomainMapper", None),
}
# Images per second of one GPU the loaders must feed: the aims of benchmarks/gpu_check.py (one
# H100/H200-class GPU, bfloat16, channels-last).
GPU_AIMS = {"MoCo-v2": 1200.0, "InsLoc": 800.0}


class GaussianBlur:
    """MoCo's ``moco.loader.GaussianBlur``: PIL's blur with a radius uniform in ``sigma``."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, image):
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class ReferenceMoCoV2:
    """MoCo-v2's training pipeline as ``main_moco.py --aug-plus`` builds it, two crops per image."""

    def __init__(self):
        normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        self.augment = transforms.Compose(
            [
                transforms.RandomResizedCrop(224, scale=(0.2, 1.0)),
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.RandomGrayscale(p=0.2),
                transforms.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )

    def __call__(self, dataset_dict):
        # torchvision's default ImageFolder loader.
        with open(dataset_dict["file_name"], "rb") as f:
            image = Image.open(f).convert("RGB")
        return [self.augment(image), self.augment(image)]


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


def with_proposals(dicts, per_image=50, seed=0):
    """
    The dicts with random proposals as "annotations" (AlignDet's mapper needs some; its cost
    hardly depends on them), keeping any the dataset has.

    Args:
        dicts (list[dict]): dataset dicts with "file_name".
        per_image (int): proposals drawn per image without any.

    Returns:
        list[dict]: new dicts.
    """
    rng = np.random.default_rng(seed)
    out = []
    for d in dicts:
        if d.get("annotations"):
            out.append(d)
            continue
        height, width = ImageFile(d["file_name"]).shape
        xy = rng.uniform(0, 0.7, (per_image, 2)) * (width, height)
        wh = rng.uniform(0.1, 0.3, (per_image, 2)) * (width, height)
        anns = [{"bbox": [*p, *s], "bbox_mode": 1, "category_id": 0} for p, s in zip(xy, wh)]
        out.append({**d, "annotations": anns})
    return out


def time_round(pipeline, dicts):
    """Seconds per image of ``pipeline`` over ``dicts``; skipped (None) images count too."""
    t0 = time.perf_counter()
    for d in dicts:
        pipeline(d)
    return (time.perf_counter() - t0) / len(dicts)


def parse_rates(items, gpu_json=None):
    """
    Args:
        items (list[str]): ``NAME=IMG_S`` entries, NAME a key of MAPPERS.
        gpu_json (str or None): a ``benchmarks/gpu_check.py`` report: each method's fastest row
            (e.g. the larger of MoCo-v2 R50-C4 and R50-FPN) is its rate.

    Returns:
        dict[str, float]: the images/s one GPU consumes per method: the aims, then the report's
        figures, then ``items``.
    """
    rates = dict(GPU_AIMS)
    if gpu_json:
        with open(gpu_json) as f:
            rows = json.load(f)["rows"]
        measured = {}
        for row in rows:
            name = row["method"].rsplit("-", 1)[0]
            if name in MAPPERS and row.get("img_per_s"):
                measured[name] = max(measured.get(name, 0.0), row["img_per_s"])
        rates.update(measured)
    for item in items:
        name, _, value = item.partition("=")
        if name not in MAPPERS or not value:
            raise ValueError(
                f"--gpu-rates {item!r}: expected NAME=IMG_S with NAME in {list(MAPPERS)}"
            )
        rates[name] = float(value)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="a registered dataset name")
    parser.add_argument("--images", type=int, default=64, help="images per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per pipeline")
    parser.add_argument("--mappers", nargs="+", default=list(MAPPERS), choices=list(MAPPERS))
    parser.add_argument(
        "--gpu-rates", nargs="*", default=[], help="NAME=IMG_S a GPU consumes (default: the aims)"
    )
    parser.add_argument("--gpu-json", help="a benchmarks/gpu_check.py report giving the rates")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    if args.opts[:1] == ["--"]:  # ends a list option: --mappers InsLoc -- KEY VALUE
        args.opts = args.opts[1:]
    rates = parse_rates(args.gpu_rates, args.gpu_json)
    setup_logger(name="detpre")
    # One loader worker: PyTorch sets one thread in workers; OpenCV is pinned here too.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    dicts = load_dicts(args.dataset)
    images = [dicts[i % len(dicts)] for i in range(args.images)]
    pipelines, inputs, mappers = {"reference": ReferenceMoCoV2()}, {"reference": images}, {}
    for name in args.mappers:
        cfg = get_detpre_cfg()
        cfg.SSL.MAPPER = MAPPERS[name][0]
        cfg.merge_from_list(args.opts)
        mapper = PRETRAIN_MAPPER_REGISTRY.get(cfg.SSL.MAPPER)(cfg, dataset_dicts=dicts)
        pipelines[name] = mappers[name] = mapper
        inputs[name] = with_proposals(images) if name == "AlignDet" else images

    # Which images decode at a reduced size (counted over one pass, outside the timing).
    factors, real_decode = [], ImageFile.decode

    def counting_decode(self, reduction=1.0):
        factors.append(self.draft_factor(reduction))
        return real_decode(self, reduction)

    reduced = {}
    ImageFile.decode = counting_decode
    try:
        for name, mapper in mappers.items():
            factors.clear()
            time_round(mapper, inputs[name])
            reduced[name] = sum(f > 1 for f in factors) / max(1, len(factors))
    finally:
        ImageFile.decode = real_decode

    for name, pipeline in pipelines.items():  # warm-up: imports, allocator, file cache
        time_round(pipeline, inputs[name][: min(8, len(images))])
    times = {name: [] for name in pipelines}
    for r in range(args.rounds):
        order = list(pipelines) if r % 2 == 0 else list(reversed(pipelines))
        for name in order:
            times[name].append(time_round(pipelines[name], inputs[name]))

    print(
        f"dataset {args.dataset}: {len(images)} images x {args.rounds} rounds, 1 thread, "
        f"overrides {args.opts or 'none'}"
    )
    median = {name: statistics.median(t) for name, t in times.items()}
    ref = median["reference"]
    print(
        f"{'pipeline':10s} {'img/s':>7s} {'ms/img':>7s} {'rounds ms':>15s} {'vs ref':>7s}  "
        f"{'reduced':>7s}  workers/GPU"
    )
    for name, sec in median.items():
        spread = f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f}"
        row = f"{name:10s} {1 / sec:7.1f} {sec * 1e3:7.2f} {spread:>15s} {ref / sec:7.2f}"
        aim = MAPPERS.get(name, (None, None))[1]
        row += f"  {reduced[name]:6.0%}" if name in reduced else f"  {'-':>6s}"
        if name in rates:
            row += f"  {math.ceil(rates[name] * sec)} at {rates[name]:.0f} img/s"
        if aim is not None:
            row += f"  (aim >= {aim:.1f}x: {'ok' if ref / sec >= aim else 'MISSED'})"
        print(row)


if __name__ == "__main__":
    main()
