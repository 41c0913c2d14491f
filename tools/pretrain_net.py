#!/usr/bin/env python
"""
Label-free pretraining (InsLoc, MoCo-v2, ...) of a Detectron2 detector's parts.

    python tools/pretrain_net.py --config-file configs/pretrain/insloc_R50_FPN_cpu_imagenet_sample.yaml
    python tools/pretrain_net.py --num-gpus 8 --config-file configs/pretrain/insloc_R50_FPN_200ep_imagenet.yaml
    python tools/pretrain_net.py --num-gpus 8 --num-machines 4 --machine-rank R \
        --dist-url tcp://HOST:PORT --config-file ...        # multi-node: run on every node
    python tools/pretrain_net.py --config-file ... --resume   # continue from OUTPUT_DIR/last_checkpoint

Beside every full checkpoint ``model_XXXXXXX.pth`` it writes ``model_XXXXXXX_d2.pth`` with exactly
Detectron2's keys, for ``tools/train_net.py ... MODEL.WEIGHTS .../model_final_d2.pth``.
"""

from detectron2.engine import default_argument_parser

from detpre.engine import PretrainTrainer, launch_from_args, setup_cfg


def main(args):
    cfg = setup_cfg(args)
    trainer = PretrainTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    launch_from_args(main, default_argument_parser().parse_args())
