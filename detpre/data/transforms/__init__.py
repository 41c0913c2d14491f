"""
Augmentations: crop geometry and MoCo-v2's pixel augmentation of the pretraining views, AlignDet's
colour operation, and the strong (box- and mask-aware) augmentation presets of self-training.
"""

from .crops import flip_box, resize_image, sample_crop
from .one_color_op import COLOR_OPS, RandomColorOp, apply_color_op
from .pixel_aug import PixelAugmentation
from .strong_aug import (
    STRONG_AUG_PRESETS,
    build_strong_augmentation,
    build_strong_augmentation_preset,
)
from .view_aug import ViewAugmentation, build_view_augmentations

__all__ = [
    "COLOR_OPS",
    "PixelAugmentation",
    "RandomColorOp",
    "STRONG_AUG_PRESETS",
    "ViewAugmentation",
    "apply_color_op",
    "build_strong_augmentation",
    "build_strong_augmentation_preset",
    "build_view_augmentations",
    "flip_box",
    "resize_image",
    "sample_crop",
]
