"""Pretraining meta-architectures, registered in Detectron2's META_ARCH_REGISTRY."""

from .aligndet import AlignDet
from .encoder import build_detector_trunk
from .insloc import InsLoc
from .moco import MoCoV2
from .momentum_contrast import MomentumContrast

__all__ = ["AlignDet", "build_detector_trunk", "InsLoc", "MoCoV2", "MomentumContrast"]
