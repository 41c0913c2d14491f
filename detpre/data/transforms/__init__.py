"""Augmentations of the pretraining views: crop geometry and MoCo-v2's pixel augmentation."""

from .crops import flip_box, resize_image, sample_crop
from .one_color_op import COLOR_OPS, RandomColorOp, apply_color_op
from .pixel_aug import PixelAugmentation

__all__ = [
    "COLOR_OPS",
    "PixelAugmentation",
    "RandomColorOp",
    "apply_color_op", "flip_box", "resize_image", "sample_crop"]
