"""Config node of SlotCon."""

from detectron2.config import CfgNode as CN


def add_slotcon_config(cfg):
    """SlotCon: Wen et al., "Self-Supervised Visual Representation Learning with Semantic Grouping", NeurIPS 2022."""
    _C = cfg
    _C.SLOTCON = CN()
