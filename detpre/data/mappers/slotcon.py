"""
SlotCon's two views: overlapping random-resized crops with BYOL's asymmetric pixel augmentation,
each recording where it was cut from the image and whether it was flipped.
"""

import math
import random

import cv2
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from fvcore.transforms.transform import HFlipTransform

from ...views import CROP_BOX, FLIPPED, IMAGE
from ..build import PRETRAIN_MAPPER_REGISTRY
from ..transforms.crops import (
    AREA_INTERPOLATION_FACTOR,
    chw_tensor,
    hflip_image,
    resize_image,
    sample_crop,
)
from ..transforms.view_aug import build_view_augmentations
from .base import PretextMapper, check_range

__all__ = ["SlotConViewsMapper", "sample_overlapping_crop"]


def _intersection_area(a, b):
    """Area shared by two (y, x, h, w) crops."""
    dy = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dx = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(dy, 0) * max(dx, 0)


def sample_overlapping_crop(
    height, width, scale, ratio, reference, min_overlap=0.01, tries=10, rng=random
):
    """
    A random-resized crop that shares at least ``min_overlap`` of its area with ``reference``
    (SlotCon's conditioned second crop): up to ``tries`` draws of (area, ratio, place); if none
    overlaps enough, an unconstrained :func:`sample_crop` (which may not overlap at all).

    Args:
        height, width (int): image size.
        scale, ratio (tuple[float, float]): as for :func:`sample_crop`.
        reference (tuple[int, int, int, int]): the first crop, (y, x, h, w).
        min_overlap (float): required fraction of the new crop's area inside ``reference``.
        tries (int): draws before the fallback.
        rng: Python ``random``-like source of randomness.

    Returns:
        tuple[int, int, int, int]: (y, x, h, w).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(tries):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            crop = (rng.randint(0, height - h), rng.randint(0, width - w), h, w)
            if _intersection_area(crop, reference) >= min_overlap * h * w:
                return crop
    return sample_crop(height, width, scale, ratio, rng=rng)


def _resize(image, height, width):
    # Bicubic as the release (PIL); area averaging where a side shrinks a lot (PIL's bicubic
    # filter widens with the shrink factor, OpenCV's does not).
    h, w = image.shape[:2]
    if max(h / height, w / width) > AREA_INTERPOLATION_FACTOR:
        return resize_image(image, height, width)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


@PRETRAIN_MAPPER_REGISTRY.register()
class SlotConViewsMapper(PretextMapper):
    """
    The views of SlotCon (Wen et al., "Self-Supervised Visual Representation Learning with
    Semantic Grouping", NeurIPS 2022): two random-resized crops (SLOTCON.CROP_SCALE of the area) of one
    image resized to ``crop_size`` squares, the second redrawn until at least SLOTCON.MIN_OVERLAP
    of its area lies in the first; each flipped with probability ``flip_prob``; then BYOL's asymmetric pixel augmentation
    (:func:`build_view_augmentations`, the SLOTCON node's per-view probabilities).

    Each view is ``{"image": uint8 (3, S, S), "crop_box": float32 (4,) XYXY of the crop in the
    original image's pixels, "flipped": bool}``;
    the model computes the overlap of the two crops in each view from ``crop_box`` and
    ``flipped``.
    """

    @configurable
    def __init__(
        self,
        *,
        crop_size,
        crop_scale,
        crop_ratio,
        min_overlap,
        overlap_tries,
        view_augs,
        image_format,
        flip_prob,
        draft_decode=True,
    ):
        """
        Args:
            crop_size (int): side of each square view.
            crop_scale (tuple[float, float]): crop area range, as a fraction of the image.
            crop_ratio (tuple[float, float]): crop aspect-ratio range (log-uniform).
            min_overlap (float): fraction of the second crop's area that must lie in the first.
            overlap_tries (int): draws of the second crop before an unconstrained one.
            view_augs (tuple[callable, callable]): uint8 (3, S, S) -> uint8 (3, S, S), the pixel
                augmentation of each view (:class:`ViewAugmentation`).
            image_format (str): INPUT.FORMAT, "RGB" or "BGR".
            flip_prob (float): probability of a horizontal flip of each view.
            draft_decode (bool): see :class:`PretextMapper`.
        """
        super().__init__(image_format=image_format, draft_decode=draft_decode)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"INPUT.SSL_AUG.FLIP_PROB={flip_prob} is not a probability")
        self.flip = T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False)
        if crop_size < 1:
            raise ValueError(f"SLOTCON.CROP_SIZE={crop_size} must be a positive side in pixels")
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f"SLOTCON.MIN_OVERLAP={min_overlap} must be a fraction in [0, 1]")
        if overlap_tries < 1:
            raise ValueError(f"SLOTCON.OVERLAP_TRIES={overlap_tries} must be at least 1")
        if len(view_augs) != 2:
            raise ValueError(f"SlotConViewsMapper needs 2 view augmentations, got {len(view_augs)}")
        self.crop_size = int(crop_size)
        self.crop_scale = check_range("SLOTCON.CROP_SCALE", crop_scale, high=1.0)
        self.crop_ratio = check_range("SLOTCON.CROP_RATIO", crop_ratio)
        self.min_overlap = float(min_overlap)
        self.overlap_tries = int(overlap_tries)
        self.view_augs = tuple(view_augs)

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        # dataset_dicts: part of the pretext-mapper signature; SlotCon needs no other image.
        cls.check_train(is_train)
        return {
            "crop_size": cfg.SLOTCON.CROP_SIZE,
            "crop_scale": tuple(cfg.SLOTCON.CROP_SCALE),
            "crop_ratio": tuple(cfg.SLOTCON.CROP_RATIO),
            "min_overlap": cfg.SLOTCON.MIN_OVERLAP,
            "overlap_tries": cfg.SLOTCON.OVERLAP_TRIES,
            "view_augs": build_view_augmentations(cfg, "SLOTCON", ("view 1", "view 2")),
            "image_format": cfg.INPUT.FORMAT,
            "flip_prob": cfg.INPUT.SSL_AUG.FLIP_PROB,
            "draft_decode": cfg.INPUT.SSL_AUG.DRAFT_DECODE,
        }

    def sample_crops(self, height, width):
        """
        Args:
            height, width (int): image size.

        Returns:
            list[tuple[int, int, int, int]]: the two crops, (y, x, h, w) each.
        """
        first = sample_crop(height, width, self.crop_scale, self.crop_ratio)
        second = sample_overlapping_crop(
            height,
            width,
            self.crop_scale,
            self.crop_ratio,
            first,
            self.min_overlap,
            self.overlap_tries,
        )
        return [first, second]

    def make_views(self, image, dataset_dict):
        s = self.crop_size
        crops = self.sample_crops(*image.shape)
        resized = self.resized_crops(image, crops, [(s, s)] * len(crops), resize=_resize)
        views = []
        for i, ((y, x, h, w), view) in enumerate(zip(crops, resized)):
            flipped = isinstance(self.flip.get_transform(view), HFlipTransform)
            views.append(
                {
                    IMAGE: self.view_augs[i](chw_tensor(hflip_image(view) if flipped else view)),
                    CROP_BOX: torch.tensor([x, y, x + w, y + h], dtype=torch.float32),
                    FLIPPED: flipped,
                }
            )
        return views
