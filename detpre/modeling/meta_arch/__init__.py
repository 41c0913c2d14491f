"""Pretraining meta-architectures, registered in Detectron2's META_ARCH_REGISTRY."""

from .aligndet import AlignDet
from .aligndet_retinanet import AlignDetRetinaNet
from .base import PretrainingMetaArch
from .encoder import build_detector_trunk
from .insloc import InsLoc
from .loca import LOCA
from .moco import MoCoV2
from .momentum_contrast import MomentumContrast
from .slotcon import SlotCon

__all__ = [
    "AlignDet",
    "AlignDetRetinaNet",
    "InsLoc",
    "LOCA",
    "MoCoV2",
    "MomentumContrast",
    "PretrainingMetaArch",
    "SlotCon",
    "build_detector_trunk",
]
