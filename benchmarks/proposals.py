#!/usr/bin/env python
"""
Speed and quality of the selective search proposals per filtering preset: images per second per
worker process, proposals per image (mean) and recall at IoU 0.5 of the ground truth boxes.

Each preset runs :func:`detpre.data.proposals.generate_proposals` (the full pipeline: pool start,
decoding, search, filtering, json) over the first ``--images`` images of ``--dataset`` into a fresh
temporary output. Recall is the fraction of the non-crowd ground truth boxes that some proposal
covers with IoU >= 0.5 (Detectron2's ``pairwise_iou``); "recall >= 32px" counts only the boxes with
width and height >= 32, the sizes the ``min_size`` filter can keep. The ``none`` row is the
unfiltered selective search output, for reference.

    python benchmarks/proposals.py
    python benchmarks/proposals.py --images 100 --workers 8 --resize 512
"""

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict

import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import detpre.data.datasets  # noqa: F401  registers the predefined datasets
from detpre.data.proposals import PRESETS, generate_proposals

UNFILTERED = dict(min_size=0, max_aspect_ratio=None, area_range=(0.0, 1.0), nms_thresh=None)


def gt_boxes(dicts):
    """Non-crowd ground truth XYXY boxes per image id."""
    boxes = {}
    for d in dicts:
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        xyxy = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        boxes[d["image_id"]] = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
    return boxes


def recall(gt, proposal_json, iou=0.5, min_side=0):
    """
    Args:
        gt (dict[int, Tensor]): (G, 4) XYXY ground truth boxes per image id.
        proposal_json (str): a proposal file of :func:`generate_proposals`.
        iou (float): the IoU a proposal needs to cover a ground truth box.
        min_side (float): only the ground truth boxes with width and height >= ``min_side``.

    Returns:
        float: the fraction of ground truth boxes covered.
    """
    with open(proposal_json) as f:
        coco = json.load(f)
    proposals = defaultdict(list)
    for a in coco["annotations"]:
        proposals[a["image_id"]].append(
            BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        )
    covered = total = 0
    for image in coco["images"]:
        g = Boxes(gt[image["id"]])
        g = g[(g.tensor[:, 2:] - g.tensor[:, :2] >= min_side).all(dim=1)]
        total += len(g)
        if len(g) and proposals[image["id"]]:
            p = Boxes(torch.tensor(proposals[image["id"]], dtype=torch.float32))
            covered += int((pairwise_iou(g, p).max(dim=1).values >= iou).sum())
    return covered / max(total, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--dataset", default="coco_tiny_val", help="a dataset with box labels")
    parser.add_argument("--images", type=int, default=20, help="the first N images")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--resize", type=int, default=512, help="see tools/prepare_proposals.py")
    args = parser.parse_args()
    setup_logger(name="detpre")
    gt = gt_boxes(DatasetCatalog.get(args.dataset)[: args.images])
    rows = []
    for preset, filters in [*PRESETS.items(), ("none", UNFILTERED)]:
        with tempfile.TemporaryDirectory() as tmp:
            output = os.path.join(tmp, f"{preset}.json")
            start = time.perf_counter()
            summary = generate_proposals(
                args.dataset,
                output,
                resize=args.resize,
                workers=args.workers,
                max_images=args.images,
                **filters,
            )
            seconds = time.perf_counter() - start
            n = summary["num_images"]
            rows.append(
                [
                    preset,
                    f"{n / seconds / args.workers:.2f}",
                    f"{summary['num_proposals'] / n:.1f}",
                    f"{recall(gt, output):.3f}",
                    f"{recall(gt, output, min_side=32):.3f}",
                ]
            )
    num_gt = sum(len(b) for b in gt.values())
    print(
        f"{args.dataset}: {len(gt)} images, {num_gt} non-crowd gt boxes; resize {args.resize}, "
        f"{args.workers} workers"
    )
    headers = ["preset", "img/s/core", "proposals/img", "recall@0.5", "recall@0.5 >= 32px"]
    print(tabulate(rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
