#!/usr/bin/env python
"""
Convert a public self-supervised release to a Detectron2 .pkl for ``MODEL.WEIGHTS``: torchvision
ResNets (MoCo, DenseCL, ...), SlotCon, InsLoc, AlignDet and LOCA checkpoints, recognised by their
keys (or ``--format``), renamed to the exact names of the detector the fine-tuning config builds.

    python tools/convert_pretrained.py slotcon_coco_r50_800ep.pth slotcon.pkl --trust-pickle \
        --config-file configs/finetune/mask_rcnn_R50_FPN_1x_coco_slotcon.yaml
    python tools/convert_pretrained.py insloc_fpn_200ep.pth insloc.pkl \
        --config-file configs/finetune/mask_rcnn_R50_FPN_1x_coco_insloc.yaml
    python tools/convert_pretrained.py loca_vbase_imnet1k loca.pkl \
        --config-file configs/finetune/mask_rcnn_ViTDet_B_100ep_coco.yaml
    python tools/convert_pretrained.py moco_v2_800ep_pretrain.pth.tar moco.pkl --target fpn

With ``--config-file`` the detector is built (on the CPU), the conversion loaded into it, and the
load table printed: what was carried, and what fine-tuning initialises fresh.
"""

import argparse
import pickle

from detectron2.modeling import build_model

from detpre.checkpoint import DetpreCheckpointer, format_load_report, to_detectron2_pickle
from detpre.checkpoint.release_formats import (
    COPIES,
    FORMATS,
    convert_release,
    load_release,
    target_of,
)
from detpre.checkpoint.reroot import resnet_layout
from detpre.engine import get_detpre_cfg

# The __author__ Detectron2 logs when it reads the .pkl.
AUTHORS = {"torchvision": "detpre"}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="the release's checkpoint (.pth, .pth.tar, .pkl, Flax)")
    parser.add_argument("output", help="the Detectron2 .pkl to write")
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS)
    parser.add_argument(
        "--copy",
        default=None,
        choices=sorted({c for cs in COPIES.values() for c in cs}),
        help="which copy to convert (default: the one the release transfers: SlotCon's and "
        "LOCA's teacher, InsLoc's query encoder)",
    )
    parser.add_argument(
        "--config-file",
        default="",
        help="the fine-tuning config: the target names come from its detector, into which the "
        "conversion is then loaded and its load table printed",
    )
    parser.add_argument(
        "--target",
        choices=("fpn", "c4", "retinanet", "vit"),
        default=None,
        help="the detector's layout without --config-file (a torchvision ResNet without either "
        "gets MoCo's heuristic-matching names)",
    )
    parser.add_argument("--prefix", default=None, help="the encoder's key prefix, to override")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load with weights_only=False, for trusted checkpoints that pickle Python objects "
        "(e.g. SlotCon's argparse options)",
    )
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides of the fine-tuning config")
    return parser


def main(args):
    model, vit = None, None
    target = args.target
    if args.config_file:
        cfg = get_detpre_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + args.opts)
        model = build_model(cfg)
        target = target_of(model.state_dict().keys())
        if target is None and resnet_layout(model.state_dict().keys()) == "plain":
            # A segmentor's plain ResNet (configs/semseg FCN): written with R50-FPN's names, which
            # DetpreCheckpointer moves to the model's when it loads them.
            target = "fpn"
        vit = {
            "cls_token": cfg.MODEL.VIT.PRETRAIN_USE_CLS_TOKEN,
            "grid": cfg.MODEL.VIT.PRETRAIN_IMG_SIZE // cfg.MODEL.VIT.PATCH_SIZE,
        }
    try:
        checkpoint = load_release(args.input, trust_pickle=args.trust_pickle)
        state_dict, report, fmt, copy = convert_release(
            checkpoint,
            args.format,
            target=target,
            copy=args.copy,
            prefix=args.prefix,
            vit=vit,
            model_keys=None if model is None else model.state_dict().keys(),
        )
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}")
    with open(args.output, "wb") as f:
        pickle.dump(
            to_detectron2_pickle(state_dict, target, author=AUTHORS.get(fmt, f"detpre ({fmt})")), f
        )
    print(f"{args.input} ({fmt}, {copy}) -> {args.output}\n{report}")
    if model is not None:
        checkpointer = DetpreCheckpointer(model)
        checkpointer.load(args.output)
        print(
            f"Loaded into {args.config_file}:\n{format_load_report(checkpointer.last_load_report)}"
        )
    return report


if __name__ == "__main__":
    main(get_parser().parse_intermixed_args())
