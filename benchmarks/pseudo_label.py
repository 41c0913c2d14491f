#!/usr/bin/env python
"""
Images per second of detpre's batched pseudo-labeller (``pseudo_label_dataset``: Detectron2's test
loader with workers, several images per forward pass, json written) against Detectron2's
``DefaultPredictor`` called image by image (``cv2.imread`` + predictor per file), with the same
model object and the same images, in alternating rounds so machine noise hits both alike. Then the
per-image cost of each strong augmentation preset (S1-S4, the student's input pipeline), through
``benchmarks/strong_aug.py``.

    python benchmarks/pseudo_label.py                    # 16 coco128 images, 3 rounds
    python benchmarks/pseudo_label.py --dataset imagenet_sample_unlabeled --batch-size 8
"""

import argparse
import importlib.util
import os
import tempfile
import time

import cv2
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from detpre.checkpoint import DetpreCheckpointer
from detpre.engine import get_detpre_cfg
from detpre.selftrain import PseudoLabelMapper, build_teacher, coco_categories, pseudo_label_dataset

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))


def time_predictor(predictor, files):
    start = time.perf_counter()
    with torch.no_grad():
        for f in files:
            predictor(cv2.imread(f))
    return time.perf_counter() - start


def time_labeller(model, dicts, kwargs):
    out = os.path.join(tempfile.mkdtemp(prefix="bench_pl_"), "labels.json")
    start = time.perf_counter()
    pseudo_label_dataset(model, dicts, out, **kwargs)
    return time.perf_counter() - start


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
    parser.add_argument("--dataset", default="coco128_train", help="images to label")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the images")
    parser.add_argument("--chunk", type=int, default=16, help="images per alternating turn")
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
    workers = cfg.DATALOADER.NUM_WORKERS if args.workers is None else args.workers
    # One teacher for both: random heads (seeded) saved and loaded as a checkpoint would be.
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="bench_pl_")
    DetpreCheckpointer(build_model(cfg), tmp).save("teacher")
    cfg.MODEL.WEIGHTS = os.path.join(tmp, "teacher.pth")
    model = build_teacher(cfg)
    predictor = DefaultPredictor(cfg)
    predictor.model = model  # the same module, score threshold and input size

    dicts = [
        {k: d[k] for k in ("file_name", "height", "width") if k in d}
        for d in DatasetCatalog.get(args.dataset)[: args.images]
    ]
    dicts = [dict(d, image_id=i + 1) for i, d in enumerate(dicts)]
    files = [d["file_name"] for d in dicts]
    categories, to_id = coco_categories(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]))
    kwargs = dict(
        mapper=PseudoLabelMapper(cfg, is_train=False),
        categories=categories,
        to_dataset_id=to_id,
        image_root=os.path.dirname(files[0]),
        score_thresh=node.SCORE_THRESH,
        batch_size=batch_size,
        chunk_size=node.CHUNK_SIZE,
        num_workers=workers,
    )
    time_predictor(predictor, files[:2])  # warm-up of both paths
    time_labeller(model, dicts[:2], kwargs)
    # Short alternating turns (one chunk of images each) so load from other jobs hits both alike.
    seconds = {"DefaultPredictor": 0.0, "batched": 0.0}
    turns = [(r, i) for r in range(args.rounds) for i in range(0, len(files), args.chunk)]
    for t, (r, i) in enumerate(turns):
        order = ("DefaultPredictor", "batched") if t % 2 == 0 else ("batched", "DefaultPredictor")
        for name in order:
            if name == "batched":
                seconds[name] += time_labeller(model, dicts[i : i + args.chunk], kwargs)
            else:
                seconds[name] += time_predictor(predictor, files[i : i + args.chunk])
    rate = {name: args.rounds * len(files) / s for name, s in seconds.items()}
    print(
        f"{len(files)} images of {args.dataset}, test size {cfg.INPUT.MIN_SIZE_TEST}, "
        f"{torch.get_num_threads()} torch threads, {args.rounds} rounds in turns of {args.chunk}:"
    )
    print(f"  DefaultPredictor, image by image: {rate['DefaultPredictor']:.2f} img/s")
    print(
        f"  batched labeller (batch {batch_size}, {workers} workers): {rate['batched']:.2f} img/s"
    )
    ratio = rate["batched"] / rate["DefaultPredictor"]
    print(f"ratio batched / DefaultPredictor: {ratio:.2f} (aim >= 1.3)")

    size = cfg.INPUT.STRONG_AUG.IMAGE_SIZE
    print(f"\nStrong augmentation, {size}-px S1-S4 outputs, 1 thread (benchmarks/strong_aug.py):")
    for preset, ms in strong_aug_costs(args.aug_images, size).items():
        print(f"  {preset}: {ms:.1f} ms/img")


if __name__ == "__main__":
    main()
