#!/usr/bin/env python
"""
Selective search proposals of a registered dataset as a one-category COCO json, for AlignDet /
SoCo-style box-domain pretraining (details in ``detpre/data/proposals/``).

    python tools/prepare_proposals.py --dataset coco_2017_train --preset aligndet
        # -> proposals/coco_2017_train_aligndet.json, read by the dataset
        #    coco_2017_train_proposals_aligndet ($DETPRE_PROPOSALS moves the folder)
    python tools/prepare_proposals.py --dataset mine --preset soco --topk 100 --output mine.json \
        DATASETS.REGISTER_IMAGE_FOLDER "[('mine', 'my/images')]"

Both presets run SoCo's selective search at full resolution (about 1 s per COCO image per
core); ``--backend opencv`` runs OpenCV's fast mode at 512 px instead, about as fast, with other
boxes. A rerun with the same ``--output`` resumes: images already in
``<output stem>.partial.jsonl`` are not searched again. Progress (images, rate, ETA) goes to the
log every ``--progress-period`` seconds.
"""

import argparse
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from detpre.config import add_detpre_config
from detpre.data.datasets import proposals_json_path, register_from_config
from detpre.data.proposals import BACKENDS, PRESETS, generate_proposals

_FILTER_KEYS = ("backend", "min_size", "max_aspect_ratio", "area_range", "nms_thresh", "topk")


def _optional(kind):
    """An argparse type that also accepts 'none'."""

    def parse(value):
        return None if value.lower() == "none" else kind(value)

    parse.__name__ = kind.__name__
    return parse


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a registered dataset name")
    parser.add_argument(
        "--output",
        default=None,
        help="the COCO json to write (default: $DETPRE_PROPOSALS/<dataset>_<preset>.json, which "
        "the predefined <dataset>_proposals_<preset> datasets read; $DETPRE_PROPOSALS defaults "
        "to ./proposals)",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="aligndet", help="filtering defaults"
    )
    parser.add_argument(
        "--resize",
        type=int,
        default=None,
        help="search the image resized to fit RESIZE x RESIZE (longer side = RESIZE); 0: as is "
        "(default: the backend's: soco full resolution, opencv 512)",
    )
    # Absent unless given: the preset's values apply.
    filters = parser.add_argument_group(
        "search and filters (override the preset)", argument_default=argparse.SUPPRESS
    )
    filters.add_argument(
        "--backend", choices=sorted(BACKENDS), help="selective search (presets: soco)"
    )
    filters.add_argument("--min-size", type=float, help="smallest box width and height, pixels")
    filters.add_argument(
        "--max-aspect-ratio", type=_optional(float), help="largest max(w/h, h/w), or 'none'"
    )
    filters.add_argument(
        "--area-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="range of sqrt(box area / image area)",
    )
    filters.add_argument(
        "--nms-thresh",
        type=_optional(float),
        help="NMS IoU, or 'none' (0.5 is one reading of AlignDet's '@0.5', unconfirmed)",
    )
    filters.add_argument("--topk", type=_optional(int), help="boxes kept per image, or 'none'")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: os.cpu_count())"
    )
    parser.add_argument("--max-images", type=int, default=None, help="the first N images only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the opencv search order")
    parser.add_argument(
        "--progress-period", type=float, default=60.0, help="seconds between progress lines"
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY VALUE config pairs registering datasets (DATASETS.REGISTER_COCO, ...)",
    )
    return parser


def main(args):
    setup_logger(name="detpre")
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_list(args.opts)
    register_from_config(cfg)
    if args.output is None:
        args.output = proposals_json_path(args.dataset, args.preset)
    # Options given (their default is SUPPRESS: absent unless given, 'none' included) override.
    filters = dict(PRESETS[args.preset])
    filters.update({k: v for k, v in vars(args).items() if k in _FILTER_KEYS})
    summary = generate_proposals(
        args.dataset,
        args.output,
        resize=args.resize,
        workers=args.workers,
        max_images=args.max_images,
        seed=args.seed,
        progress_period=args.progress_period,
        **filters,
    )
    print(
        f"{summary['num_proposals']} proposals of {summary['num_images']} images in "
        f"{args.output} ({len(summary['skipped'])} unreadable images skipped)."
    )
    predefined = f"{args.dataset}_proposals_{args.preset}"
    if predefined in DatasetCatalog.list() and os.path.abspath(args.output) == os.path.abspath(
        proposals_json_path(args.dataset, args.preset)
    ):
        print(f"Use them with: DATASETS.TRAIN \"('{predefined}',)\"")
        return
    name = os.path.splitext(os.path.basename(args.output))[0]
    print(
        "Use them with:\n"
        f"""  DATASETS.REGISTER_COCO "[('{name}', '{os.path.abspath(args.output)}', """
        f"""'{summary['image_root']}')]" DATASETS.TRAIN "('{name}',)" """
    )


if __name__ == "__main__":
    main(get_parser().parse_args())
