#!/usr/bin/env python
"""
Speed and quality of the selective search proposals per backend and filtering: images per second
per worker process, proposals per image (mean), recall at IoU 0.5 of the ground truth boxes, and
the share of a row's proposals that the reference row (SoCo's generator with the aligndet filter,
what AlignDet pretrains on) also has, at IoU >= 0.7.

Each row runs :func:`detpre.data.proposals.generate_proposals` (the full pipeline: pool start,
decoding, search, filtering, json) over the first ``--images`` images of ``--dataset`` into a fresh
temporary output. Recall is the fraction of the non-crowd ground truth boxes that some proposal
covers with IoU >= 0.5 (Detectron2's ``pairwise_iou``); "recall >= 32px" counts only the boxes with
width and height >= 32, the sizes the ``min_size`` filter can keep. The ``none`` rows are the
unfiltered selective search output, for reference; "+ NMS 0.5" is the unconfirmed reading of the
"@0.5" in AlignDet's file name.

    python benchmarks/proposals.py
    python benchmarks/proposals.py --images 100 --workers 8
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


def recall(gt, proposals, iou=0.5, min_side=0):
    """
    Args:
        gt (dict[int, Tensor]): (G, 4) XYXY ground truth boxes per image id.
        proposals (dict[int, Tensor]): (P, 4) XYXY proposals per image id (:func:`load_proposals`).
        iou (float): the IoU a proposal needs to cover a ground truth box.
        min_side (float): only the ground truth boxes with width and height >= ``min_side``.

    Returns:
        float: the fraction of ground truth boxes covered.
    """
    covered = total = 0
    for image_id, boxes in gt.items():
        g = Boxes(boxes)
        g = g[(g.tensor[:, 2:] - g.tensor[:, :2] >= min_side).all(dim=1)]
        total += len(g)
        p = proposals.get(image_id)
        if len(g) and p is not None and len(p):
            covered += int((pairwise_iou(g, Boxes(p)).max(dim=1).values >= iou).sum())
    return covered / max(total, 1)


def load_proposals(proposal_json):
    """XYXY proposals per image id of a proposal file."""
    with open(proposal_json) as f:
        coco = json.load(f)
    proposals = defaultdict(list)
    for a in coco["annotations"]:
        proposals[a["image_id"]].append(
            BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        )
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in proposals.items()}


def agreement(ours, reference, iou=0.7):
    """The share of the boxes of ``ours`` that some box of ``reference`` (same image) overlaps
    with IoU >= ``iou``."""
    matched = total = 0
    for image_id, boxes in ours.items():
        total += len(boxes)
        ref = reference.get(image_id)
        if ref is not None and len(ref):
            matched += int((pairwise_iou(Boxes(boxes), Boxes(ref)).max(dim=1).values >= iou).sum())
    return matched / max(total, 1)


def rows_to_run():
    """(row name, generate_proposals keyword arguments); the first row is the reference."""
    aligndet = PRESETS["aligndet"]
    return [
        ("soco, aligndet", dict(aligndet)),
        ("soco, soco", dict(PRESETS["soco"])),
        ("soco, aligndet + NMS 0.5", dict(aligndet, nms_thresh=0.5)),
        ("soco, none", dict(UNFILTERED, backend="soco")),
        ("opencv 512, aligndet", dict(aligndet, backend="opencv")),
        ("opencv 512, aligndet + NMS 0.5", dict(aligndet, backend="opencv", nms_thresh=0.5)),
        ("opencv 512, none", dict(UNFILTERED, backend="opencv")),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--dataset", default="coco_tiny_val", help="a dataset with box labels")
    parser.add_argument("--images", type=int, default=20, help="the first N images")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args()
    setup_logger(name="detpre")
    gt = gt_boxes(DatasetCatalog.get(args.dataset)[: args.images])
    rows, reference = [], None
    for name, kwargs in rows_to_run():
        with tempfile.TemporaryDirectory() as tmp:
            output = os.path.join(tmp, "proposals.json")
            start = time.perf_counter()
            summary = generate_proposals(
                args.dataset, output, workers=args.workers, max_images=args.images, **kwargs
            )
            seconds = time.perf_counter() - start
            proposals = load_proposals(output)
            reference = proposals if reference is None else reference
            n = summary["num_images"]
            counts = [len(proposals.get(i, [])) for i in gt]
            rows.append(
                [
                    name,
                    f"{n / seconds / args.workers:.2f}",
                    f"{summary['num_proposals'] / n:.1f} ({min(counts)}-{max(counts)})",
                    f"{recall(gt, proposals):.3f}",
                    f"{recall(gt, proposals, min_side=32):.3f}",
                    f"{agreement(proposals, reference):.3f}",
                ]
            )
    num_gt = sum(len(b) for b in gt.values())
    print(f"{args.dataset}: {len(gt)} images, {num_gt} non-crowd gt boxes; {args.workers} workers")
    headers = [
        "backend, filter",
        "img/s/core",
        "proposals/img (min-max)",
        "recall@0.5",
        "recall@0.5 >= 32px",
        "in soco aligndet @0.7",
    ]
    print(tabulate(rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
