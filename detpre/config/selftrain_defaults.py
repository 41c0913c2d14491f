"""Config node of Noisy-student self-training."""

from detectron2.config import CfgNode as CN


def add_selftrain_config(cfg):
    """Noisy-student self-training: Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS 2020."""
    _C = cfg
    _C.SELF_TRAIN = CN()
