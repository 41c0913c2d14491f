"""Config node of LOCA."""

from detectron2.config import CfgNode as CN


def add_loca_config(cfg):
    """LOCA: Caron et al., "Location-Aware Self-Supervised Transformers for Semantic Segmentation", 2022."""
    _C = cfg
    _C.LOCA = CN()
