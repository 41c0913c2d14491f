#!/usr/bin/env python
"""
The grouping a SlotCon pretraining learned (Wen et al., NeurIPS 2022): each image of a dataset with
its pixels coloured by the teacher's prototype, and for some prototypes their nearest segments
across the dataset, written as PNG files under --output.

    python tools/visualize_slotcon.py --config-file configs/pretrain/slotcon_R50_C4_cpu_coco.yaml \
        --weights output/pretrain/slotcon_R50_C4_cpu_coco/model_final.pth --dataset coco_tiny_val \
        --output output/slotcon_grouping
    python tools/visualize_slotcon.py ... --prototypes 3 17 42 --topk 8   # chosen prototypes

--weights is a full pretraining checkpoint (``model_XXXXXXX.pth`` / ``model_final.pth``, which
hold the teacher's projector and prototypes), not the exported ``*_d2.pth``.
"""

import argparse
import logging
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from detpre.data.image_io import CorruptImageError
from detpre.engine import setup_cfg
from detpre.evaluation.slotcon_grouping import (
    compute_assignments,
    load_square_image,
    most_used_prototypes,
    write_grouping_pictures,
)

logger = logging.getLogger("detpre.visualize_slotcon")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="pretraining config")
    parser.add_argument("--weights", required=True, help="full SlotCon pretraining checkpoint")
    parser.add_argument("--dataset", default="coco_tiny_val", help="a registered dataset name")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument("--num-images", type=int, default=50, help="first N images of the dataset")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square images")
    parser.add_argument("--prototypes", type=int, nargs="*", default=[], help="prototype ids")
    parser.add_argument(
        "--num-prototypes", type=int, default=8, help="without --prototypes: the N most used"
    )
    parser.add_argument("--topk", type=int, default=5, help="nearest segments per prototype")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def load_slotcon(cfg, weights):
    """
    Args:
        cfg (CfgNode): a SlotCon pretraining config.
        weights (str): a full pretraining checkpoint.

    Returns:
        SlotCon: in eval mode, its teacher loaded.
    """
    if cfg.MODEL.META_ARCHITECTURE != "SlotCon":
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE!r} is not 'SlotCon': pass a SlotCon pretraining config"
        )
    model = build_model(cfg)
    data = torch.load(weights, map_location="cpu", weights_only=False)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{weights} holds no state dict")
    missing = model.load_state_dict(state, strict=False).missing_keys
    teacher = [k for k in missing if k.startswith("momentum.")]
    if teacher:
        raise ValueError(
            f"{weights} lacks the SlotCon teacher ({len(teacher)} keys such as {teacher[0]}): "
            "pass a full pretraining checkpoint (model_final.pth), not the exported *_d2.pth"
        )
    return model.eval()


def main(args):
    cfg = setup_cfg(args, run_default_setup=False)
    setup_logger(name="detpre")
    for key in ("num_images", "image_size", "num_prototypes", "topk"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1")
    model = load_slotcon(cfg, args.weights)
    dicts = DatasetCatalog.get(args.dataset)[: args.num_images]
    images, names = [], []
    for d in dicts:
        try:
            images.append(load_square_image(d["file_name"], args.image_size))
        except CorruptImageError as e:
            logger.warning("%s; skipped", e)
            continue
        names.append(os.path.splitext(os.path.basename(d["file_name"]))[0])
    if not images:
        raise ValueError(f"No readable image in the first {args.num_images} of {args.dataset}")
    images = np.stack(images)
    logits = compute_assignments(model, images, cfg.INPUT.FORMAT)
    prototypes = args.prototypes or most_used_prototypes(logits, args.num_prototypes)
    written = write_grouping_pictures(images, logits, args.output, names, prototypes, args.topk)
    logger.info(
        "Wrote %d grouping pictures and %d prototype pictures under %s",
        len(written["grouping"]),
        len(written["prototypes"]),
        args.output,
    )
    return written


if __name__ == "__main__":
    main(get_parser().parse_args())
