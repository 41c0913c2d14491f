#!/usr/bin/env python
"""
Draw what the methods do, as one image per sample under --output:

    # the pretext views of a method's config, on any registered dataset
    python tools/visualize.py views --config-file configs/pretrain/loca_R50_FPN_cpu_imagenet_sample.yaml \
        --dataset coco_tiny_val --num-images 4 --output output/vis/loca_views
    # a proposals json (tools/prepare_proposals.py) / a pseudo-label json (tools/pseudo_label.py)
    python tools/visualize.py proposals --json $DETPRE_PROPOSALS/coco_tiny_train_aligndet.json \
        --output output/vis/proposals
    python tools/visualize.py pseudo-labels --json output/selftrain/pseudo_labels.json \
        --output output/vis/pseudo
    # the detections of a fine-tuned checkpoint
    python tools/visualize.py detections --config-file configs/finetune/faster_rcnn_R50_FPN_cpu_bccd.yaml \
        --weights output/main_job/insloc/finetune/model_final.pth --dataset bccd_voc_test \
        --output output/vis/detections

SlotCon's learned grouping has its own tool, tools/visualize_slotcon.py.
"""

import argparse
import os

import cv2
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor

from detpre.data.build import build_pretrain_mapper, get_pretrain_dicts
from detpre.engine import get_detpre_cfg
from detpre.visualization import (
    draw_detections,
    draw_pretext_views,
    draw_proposals,
    draw_pseudo_labels,
    read_coco_json,
)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("views", "proposals", "pseudo-labels", "detections"):
        p = sub.add_parser(kind)
        p.add_argument("--output", required=True, help="folder for the images")
        p.add_argument("--num-images", type=int, default=8, help="the first N samples")
        p.add_argument("--ext", default="png", choices=("png", "jpg"))
        if kind in ("views", "detections"):
            p.add_argument("--config-file", required=True, metavar="FILE")
            p.add_argument("--dataset", default=None, help="a registered dataset name")
            p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
        if kind in ("proposals", "pseudo-labels"):
            p.add_argument("--json", required=True, help="the COCO json")
            p.add_argument("--image-root", default=None, help="default: the json's info")
        if kind == "views":
            p.add_argument("--seed", type=int, default=0)
        if kind == "detections":
            p.add_argument("--weights", required=True)
            p.add_argument("--threshold", type=float, default=0.5)
    return parser


def _cfg(args):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    return cfg


def _pictures(args):
    """(name, RGB image) of every sample drawn."""
    if args.kind == "views":
        cfg = _cfg(args)
        if args.dataset:
            cfg.DATASETS.TRAIN = (args.dataset,)
        dicts = get_pretrain_dicts(cfg)
        mapper = build_pretrain_mapper(cfg, dicts)
        count = 0
        for d in dicts:
            mapped = mapper(d)
            if mapped is None:
                continue
            yield os.path.basename(d["file_name"]), draw_pretext_views(cfg, mapped, args.seed)
            count += 1
            if count == args.num_images:
                return
    elif args.kind in ("proposals", "pseudo-labels"):
        images, categories = read_coco_json(args.json, args.image_root)
        for record in images[: args.num_images]:
            name = os.path.basename(record["file_name"])
            if args.kind == "proposals":
                yield name, draw_proposals(record)
            else:
                yield name, draw_pseudo_labels(record, categories)
    else:
        cfg = _cfg(args)
        cfg.MODEL.WEIGHTS = args.weights
        dataset = args.dataset or cfg.DATASETS.TEST[0]
        predictor = DefaultPredictor(cfg)
        for d in DatasetCatalog.get(dataset)[: args.num_images]:
            image = draw_detections(predictor, d["file_name"], dataset, args.threshold)
            yield os.path.basename(d["file_name"]), image


def main(args):
    os.makedirs(args.output, exist_ok=True)
    written = []
    for k, (name, image) in enumerate(_pictures(args)):
        path = os.path.join(args.output, f"{k:04d}_{os.path.splitext(name)[0]}.{args.ext}")
        cv2.imwrite(path, image[:, :, ::-1])
        written.append(path)
    print(f"wrote {len(written)} images to {args.output}")
    return written


if __name__ == "__main__":
    main(get_parser().parse_args())
