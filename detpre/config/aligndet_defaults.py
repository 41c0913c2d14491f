"""Config node of AlignDet."""

from detectron2.config import CfgNode as CN


def add_aligndet_config(cfg):
    """AlignDet: Li et al., "AlignDet: Aligning Pre-training and Fine-tuning in Object Detection", ICCV 2023."""
    _C = cfg
    _C.ALIGNDET = CN()
