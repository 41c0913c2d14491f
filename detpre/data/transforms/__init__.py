"""Augmentations of the pretraining views: crop geometry and MoCo-v2's pixel augmentation."""

from .crops import flip_box, resize_image, sample_crop
from .pixel_aug import PixelAugmentation

__all__ = ["PixelAugmentation", "flip_box", "resize_image", "sample_crop"]
