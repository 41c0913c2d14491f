#!/usr/bin/env python
"""
Fine-tune and evaluate a Detectron2 detector (Faster / Mask R-CNN, R50-C4 / R50-FPN) or, with a
``configs/semseg`` config, a semantic segmentor (FCN, Semantic FPN, Segmenter's linear decoder on a
ViT; mIoU) from any checkpoint: a Detectron2 model, a detpre pretraining output, or a
torchvision-style ResNet-50.

    python tools/train_net.py --config-file configs/finetune/mask_rcnn_R50_FPN_cpu_coco_tiny.yaml \
        MODEL.WEIGHTS output/pretrain/model_final_d2.pth OUTPUT_DIR output/finetune
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/finetune/model_final.pth
    python tools/train_net.py --config-file configs/semseg/fcn_R50_D8_cpu_coco_sem_seg.yaml \
        MODEL.WEIGHTS output/pretrain/slotcon_R50_FPN_cpu_imagenet_sample/model_final_d2.pth
    python tools/train_net.py --num-gpus 8 --config-file ...          # one machine
    python tools/train_net.py --num-gpus 8 --num-machines 2 --machine-rank 0 \
        --dist-url tcp://HOST:PORT --config-file ...                 # multi-node, run on each node
"""

from detectron2.engine import default_argument_parser

from detpre.engine import FinetuneTrainer, launch_from_args, setup_cfg
from detpre.evaluation import report_final_results


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = FinetuneTrainer.build_model(cfg)
        checkpointer = FinetuneTrainer.build_checkpointer(cfg, model)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = FinetuneTrainer.test(cfg, model)
    else:
        trainer = FinetuneTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    report_final_results(cfg, results)
    return results


if __name__ == "__main__":
    launch_from_args(main, default_argument_parser().parse_args())
