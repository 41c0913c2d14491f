#!/usr/bin/env python
"""
Pseudo-label unlabeled images with a teacher detector (noisy-student self-training, Zoph et al.
2020): batched inference over every dataset of SELF_TRAIN.UNLABELED_DATASETS (registered datasets
or image folders), sharded across processes, into OUTPUT_DIR/<dataset>.json (COCO format: hard
boxes scoring >= SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH, RLE masks, DATASETS.TRAIN[0]'s categories
with their original ids, images without a box kept). Rerunning resumes; unreadable images are
reported and skipped.

    python tools/pseudo_label.py \
        --config-file configs/selftrain/mask_rcnn_R50_FPN_cpu_coco_tiny.yaml \
        MODEL.WEIGHTS output/teacher/model_final.pth OUTPUT_DIR output/pseudo_labels
    python tools/pseudo_label.py --num-gpus 8 --config-file ... \
        SELF_TRAIN.UNLABELED_DATASETS "('imagenet_train',)" MODEL.WEIGHTS teacher.pth
    # then train a student on them:
    python tools/self_train.py --stage student --config-file ... \
        DATASETS.REGISTER_COCO \
        "[('pl_imagenet', 'output/pseudo_labels/imagenet_train.json', 'imagenet/train')]" \
        SELF_TRAIN.PSEUDO_DATASETS "('pl_imagenet',)"
"""

import logging

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser
from detectron2.utils.logger import setup_logger

from detpre.engine import launch_from_args, setup_cfg
from detpre.selftrain import build_teacher, run_pseudo_labelling

logger = logging.getLogger("detpre")


def main(args):
    cfg = setup_cfg(args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detpre")
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: give the teacher's checkpoint")
    outputs = run_pseudo_labelling(cfg, build_teacher(cfg), cfg.OUTPUT_DIR)
    logger.info("Pseudo-labels: %s", outputs)
    return outputs


if __name__ == "__main__":
    launch_from_args(main, default_argument_parser().parse_args())
