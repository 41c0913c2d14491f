"""
What the pretraining meta-architectures share: the trainer contract (:class:`PretrainingMetaArch`),
the detector trunk they train under ``GeneralizedRCNN``'s names, and MoCo's momentum contrast
(InsLoc, MoCo-v2). Each method lives in its own folder (``detpre/modeling/<method>/``).
"""

from .base import PretrainingMetaArch
from .encoder import Res5TrunkExport, build_detector_trunk, build_res5_trunk
from .momentum_contrast import MomentumContrast

__all__ = [
    "MomentumContrast",
    "PretrainingMetaArch",
    "Res5TrunkExport",
    "build_detector_trunk",
    "build_res5_trunk",
]
