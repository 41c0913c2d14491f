#!/usr/bin/env python
"""
Convert a torchvision-style ResNet (a self-supervised release: MoCo, DenseCL, SlotCon, ...) to a
Detectron2 .pkl for ``MODEL.WEIGHTS``, in the format of MoCo's detection recipe.

    python tools/convert_pretrained.py moco_v2_800ep_pretrain.pth.tar moco_v2_800ep.pkl
    python tools/convert_pretrained.py slotcon.pth slotcon_teacher_fpn.pkl \
        --prefix module.encoder_k. --target fpn

``tools/train_net.py`` also reads such files directly (DetpreCheckpointer converts on the fly);
converting once keeps the run's input small and its conversion report on record.
"""

import argparse
import pickle

import torch

from detpre.checkpoint import TARGETS, convert_torchvision_resnet, to_detectron2_pickle


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a .pth / .pth.tar state dict or training checkpoint")
    parser.add_argument("output", help="the Detectron2 .pkl to write")
    parser.add_argument(
        "--target",
        choices=[t for t in TARGETS if t],
        default=None,
        help="write the exact names of an R50-C4 or R50-FPN detector instead of MoCo's "
        "heuristic-matching names",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="the encoder's key prefix, to override the detection (e.g. 'module.encoder_k.')",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load with weights_only=False, for trusted checkpoints that pickle Python objects "
        "(e.g. an argparse.Namespace of options)",
    )
    return parser


def main(args):
    try:
        checkpoint = torch.load(args.input, map_location="cpu", weights_only=not args.trust_pickle)
    except pickle.UnpicklingError as e:
        raise SystemExit(
            f"{args.input} holds Python objects besides tensors; if you trust its source, "
            f"rerun with --trust-pickle.\n{e}"
        )
    try:
        state_dict, report = convert_torchvision_resnet(
            checkpoint, target=args.target, prefix=args.prefix
        )
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}")
    with open(args.output, "wb") as f:
        pickle.dump(to_detectron2_pickle(state_dict, args.target), f)
    print(f"{args.input} -> {args.output}\n{report}")


if __name__ == "__main__":
    main(get_parser().parse_args())
