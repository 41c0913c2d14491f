"""Config node of the strong augmentation presets (noisy-student self-training, Zoph et al. 2020)."""

from detectron2.config import CfgNode as CN


def add_strong_aug_config(cfg):
    """Strong augmentation presets S1-S4 of Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS 2020."""
    _C = cfg
    _C.INPUT.STRONG_AUG = CN()
