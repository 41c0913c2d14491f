#!/usr/bin/env python
"""
Images per second of detpre's pseudo-labeller (``pseudo_label_dataset``: Detectron2's test loader
with workers, several images per forward pass, json written) against Detectron2's
``DefaultPredictor`` called image by image (``cv2.imread`` + predictor per file), with the same
weights, score threshold, test size and images. Rounds alternate the order of the contenders so
machine noise hits all alike; each labeller call labels all the images, as one dataset would be.

Contenders:
- ``DefaultPredictor``: float32, the layout Detectron2 builds (what a user writes by hand);
- ``labeller``: the config's ``SELF_TRAIN.PSEUDO_LABEL`` settings (batch, workers, PRECISION,
  CHANNELS_LAST); the bundled CPU config labels in bfloat16, channels-last;
- ``labeller float32``: the same with PRECISION float32 and Detectron2's layout, which tells how
  much of the gain is batching and how much is precision.

It also prints how far the config's labels are from the float32 ones: the share of float32 boxes
with a box of the same class at IoU >= 0.9 among the config's labels, and the reverse. The teacher
is ``--weights`` (a trained one makes this meaningful) or, by default, seeded random heads. Last,
the per-image cost of each strong augmentation preset (S1-S4, the student's input pipeline),
through ``benchmarks/strong_aug.py``.

    python benchmarks/pseudo_label.py                    # 16 coco128 images, 3 rounds
    python benchmarks/pseudo_label.py --weights output/selftrain/teacher/model_final.pth
"""

import argparse
import importlib.util
import json
import os
import tempfile
import time

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from detpre.checkpoint import DetpreCheckpointer
from detpre.engine import get_detpre_cfg
from detpre.selftrain import (
    PseudoLabelMapper,
    build_teacher,
    coco_categories,
    labeller_workers,
    pseudo_label_dataset,
)

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))


def time_predictor(predictor, files):
    start = time.perf_counter()
    with torch.no_grad():
        for f in files:
            predictor(cv2.imread(f))
    return time.perf_counter() - start


def time_labeller(model, dicts, out_file, kwargs):
    if os.path.exists(out_file):
        os.remove(out_file)
    start = time.perf_counter()
    pseudo_label_dataset(model, dicts, out_file, **kwargs)
    return time.perf_counter() - start


def box_agreement(reference_file, other_file, iou=0.9):
    """Share of the reference json's boxes that have a box of the same image and category at
    IoU >= ``iou`` in the other json (1.0 when the reference has none)."""
    boxes = []
    for path in (reference_file, other_file):
        with open(path) as f:
            anns = json.load(f)["annotations"]
        by_key = {}
        for a in anns:
            by_key.setdefault((a["image_id"], a["category_id"]), []).append(a["bbox"])
        boxes.append(by_key)
    ref, other = boxes
    total = sum(len(v) for v in ref.values())
    matched = 0
    for key, ref_boxes in ref.items():
        if key in other:
            ious = mask_util.iou(ref_boxes, other[key], [0] * len(other[key]))
            matched += int((np.asarray(ious).max(axis=1) >= iou).sum())
    return matched / total if total else 1.0, total


def strong_aug_costs(num_images, image_size):
    """ms per image of each preset (one thread, as a loader worker), from the strong augmentation
    benchmark's helper."""
    path = os.path.join(BENCHMARKS, "strong_aug.py")
    spec = importlib.util.spec_from_file_location("strong_aug_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.preset_costs(num_images=num_images, image_size=image_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--config-file", default="configs/selftrain/mask_rcnn_R50_FPN_cpu_coco_tiny.yaml"
    )
    parser.add_argument("--weights", default="", help="teacher checkpoint; default random heads")
    parser.add_argument("--dataset", default="coco128_train", help="images to label")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the images")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--workers", type=int, default=None, help="default: the config's")
    parser.add_argument("--aug-images", type=int, default=16, help="images per preset timing")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    setup_logger(name="detpre")

    cfg = get_detpre_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    node = cfg.SELF_TRAIN.PSEUDO_LABEL
    batch_size = args.batch_size or node.BATCH_SIZE
    workers = labeller_workers(cfg) if args.workers is None else args.workers
    with tempfile.TemporaryDirectory(prefix="bench_pl_") as tmp:
        if args.weights:
            cfg.MODEL.WEIGHTS = args.weights
        else:  # random heads (seeded) saved and loaded as a checkpoint would be
            torch.manual_seed(0)
            DetpreCheckpointer(build_model(cfg), tmp).save("teacher")
            cfg.MODEL.WEIGHTS = os.path.join(tmp, "teacher.pth")
        teacher = build_teacher(cfg)
        plain_cfg = cfg.clone()
        plain_cfg.SELF_TRAIN.PSEUDO_LABEL.CHANNELS_LAST = False
        plain = build_teacher(
            plain_cfg
        )  # the same weights and score threshold, Detectron2's layout
        predictor = DefaultPredictor(cfg)
        predictor.model = plain  # as DefaultPredictor builds it, at the teacher's score threshold

        dicts = [
            {k: d[k] for k in ("file_name", "height", "width") if k in d}
            for d in DatasetCatalog.get(args.dataset)[: args.images]
        ]
        dicts = [dict(d, image_id=i + 1) for i, d in enumerate(dicts)]
        files = [d["file_name"] for d in dicts]
        categories, to_id = coco_categories(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]))
        common = dict(
            mapper=PseudoLabelMapper(cfg, is_train=False),
            categories=categories,
            to_dataset_id=to_id,
            image_root=os.path.dirname(files[0]),
            score_thresh=node.SCORE_THRESH,
            batch_size=batch_size,
            chunk_size=node.CHUNK_SIZE,
            num_workers=workers,
        )
        labellers = {
            "labeller": (teacher, dict(common, precision=node.PRECISION)),
            "labeller float32": (plain, dict(common, precision="float32")),
        }
        out = {name: os.path.join(tmp, f"{i}.json") for i, name in enumerate(labellers)}

        def run(name, images):
            if name == "DefaultPredictor":
                return time_predictor(predictor, [d["file_name"] for d in images])
            model, kwargs = labellers[name]
            return time_labeller(model, images, out[name], kwargs)

        names = ["DefaultPredictor", *labellers]
        for name in names:  # warm-up
            run(name, dicts[:2])
        seconds = dict.fromkeys(names, 0.0)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                seconds[name] += run(name, dicts)
        rate = {name: args.rounds * len(dicts) / s for name, s in seconds.items()}
        agree, total = box_agreement(out["labeller float32"], out["labeller"])
        agree_back, total_back = box_agreement(out["labeller"], out["labeller float32"])

    print(
        f"{len(files)} images of {args.dataset}, test size {cfg.INPUT.MIN_SIZE_TEST}, "
        f"{torch.get_num_threads()} torch threads, {args.rounds} rounds, "
        f"score >= {node.SCORE_THRESH}, teacher {args.weights or 'random heads'}:"
    )
    layout = "channels-last" if node.CHANNELS_LAST else "NCHW"
    settings = {
        "DefaultPredictor": "image by image, float32, NCHW",
        "labeller": f"batch {batch_size}, {workers} workers, {node.PRECISION}, {layout}",
        "labeller float32": f"batch {batch_size}, {workers} workers, float32, NCHW",
    }
    for name in names:
        ratio = rate[name] / rate["DefaultPredictor"]
        print(f"  {name:17s} {rate[name]:6.2f} img/s  x{ratio:.2f}  ({settings[name]})")
    ratio = rate["labeller"] / rate["DefaultPredictor"]
    print(f"ratio labeller / DefaultPredictor: {ratio:.2f} (aim >= 1.3)")
    print(
        f"labels vs float32 labels: {agree:.3f} of {total} float32 boxes kept (same class, "
        f"IoU >= 0.9); {agree_back:.3f} of {total_back} {node.PRECISION} boxes found in float32"
    )

    size = cfg.INPUT.STRONG_AUG.IMAGE_SIZE
    print(f"\nStrong augmentation, {size}-px S1-S4 outputs, 1 thread (benchmarks/strong_aug.py):")
    for preset, ms in strong_aug_costs(args.aug_images, size).items():
        print(f"  {preset}: {ms:.1f} ms/img")


if __name__ == "__main__":
    main()
