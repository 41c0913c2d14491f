#!/usr/bin/env python
"""
The localization readout of InsLoc (Yang et al., CVPR 2021): a linear classifier predicts which of
the 3 x 3 grid patches of an image a frozen detector's RoI feature comes from.

    python tools/localization_probe.py --weights output/pretrain/model_final_d2.pth
    python tools/localization_probe.py --config-file configs/pretrain/Base-Pretrain-R50-C4.yaml \
        --weights moco_v2_800ep_pretrain.pth.tar --dataset coco_tiny_val --output probe.json
    python tools/localization_probe.py ... --variant isolated   # each patch fed alone
    python tools/localization_probe.py ... MODEL.RESNETS.NORM FrozenBN   # trailing config overrides

The config describes the architecture (C4 or FPN); the network is built as Detectron2's
GeneralizedRCNN whatever its MODEL.META_ARCHITECTURE, so any checkpoint with Detectron2's names
(pretraining outputs included) or a torchvision-style ResNet loads.
"""

import argparse
import json
import os

import torch
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from detpre.engine import setup_cfg
from detpre.evaluation.localization_probe import run_localization_probe

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "configs",
    "pretrain",
    "Base-Pretrain-R50-FPN.yaml",
)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        default=os.path.normpath(_DEFAULT_CONFIG),
        metavar="FILE",
        help="the architecture (default: the R50-FPN pretraining base config)",
    )
    parser.add_argument(
        "--weights", default=None, help="checkpoint to probe (default: the config's MODEL.WEIGHTS)"
    )
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=["imagenet_sample_unlabeled"],
        help="registered dataset names (their images together)",
    )
    parser.add_argument(
        "--variant",
        choices=("grid", "isolated"),
        default="grid",
        help="grid: the paper's (whole image, patches pooled; borders and padding give a random "
        "network the position); isolated: each patch fed alone",
    )
    parser.add_argument("--size", type=int, default=224, help="images are resized to size x size")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--max-images", type=int, default=None, help="a seeded subset of images")
    parser.add_argument(
        "--train-fraction", type=float, default=0.8, help="fraction of images to train on"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train / test image split")
    parser.add_argument("--output", default=None, help="write the result to this json file")
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.RESNETS.NORM FrozenBN",
    )
    return parser


def main(args):
    setup_logger(name="detpre")
    setup_logger(name="fvcore")
    args.opts = list(args.opts or [])
    if not torch.cuda.is_available():
        args.opts += ["MODEL.DEVICE", "cpu"]
    cfg = setup_cfg(args, run_default_setup=False)
    result = run_localization_probe(
        cfg,
        args.weights,
        args.dataset,
        size=args.size,
        batch_size=args.batch_size,
        max_images=args.max_images,
        train_fraction=args.train_fraction,
        seed=args.seed,
        variant=args.variant,
    )
    result["config_file"] = args.config_file
    if args.output:
        PathManager.mkdirs(os.path.dirname(os.path.abspath(args.output)))
        with PathManager.open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    lo, hi = result["test_acc_interval"]
    print(
        f"localization readout ({args.variant}): {100 * result['test_acc']:.1f}% top-1, 95% "
        f"interval {100 * lo:.1f}-{100 * hi:.1f} (chance {100 * result['chance']:.1f}%) on "
        f"{result['num_test_images']} test images x {result['num_patches']} patches"
    )
    return result


if __name__ == "__main__":
    main(get_parser().parse_args())
