"""
SlotCon's two views: overlapping random-resized crops with BYOL's asymmetric pixel augmentation,
each recording where it was cut from the image and whether it was flipped.
"""

import math
import random

import cv2
import torch
from detectron2.config import configurable
from detectron2.structures import Boxes
from fvcore.transforms.transform import HFlipTransform
from torchvision.transforms import v2

from ..build import PRETRAIN_MAPPER_REGISTRY
from ..transforms.crops import (
    AREA_INTERPOLATION_FACTOR,
    chw_tensor,
    hflip_image,
    resize_image,
    sample_crop,
)
from ..transforms.pixel_aug import PixelAugmentation
from .two_views import TwoViewsMapper, check_range

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
class SlotConViewsMapper(TwoViewsMapper):
    """
    The views of SlotCon (Wen et al., "Self-Supervised Visual Representation Learning with
    Semantic Grouping", NeurIPS 2022): two random-resized crops (area 8% to 100%) of one image
    resized to ``crop_size`` squares, the second redrawn until at least 1% of its area lies in the
    first; each flipped with probability ``flip_prob``; colour jitter and grayscale on both, blur
    always on the first and with probability 0.1 on the second, solarization on the second with
    probability 0.2 (BYOL's asymmetric recipe).

    Each view is ``{"image": uint8 (3, S, S), "boxes": Boxes([[0, 0, S, S]]) (the whole view),
    "crop_box": float32 (4,) XYXY of the crop in the original image's pixels, "flipped": bool}``;
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
        pixel_augs,
        solarize_probs,
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
            pixel_augs (tuple[callable, callable]): colour jitter, grayscale and blur of each view.
            solarize_probs (tuple[float, float]): solarization probability of each view.
            image_format, flip_prob, draft_decode: see :class:`TwoViewsMapper`.
        """
        super().__init__(
            image_format=image_format,
            pixel_aug=None,
            flip_prob=flip_prob,
            draft_decode=draft_decode,
        )
        if crop_size < 1:
            raise ValueError(f"SLOTCON.CROP_SIZE={crop_size} must be a positive side in pixels")
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f"SLOTCON.MIN_OVERLAP={min_overlap} must be a fraction in [0, 1]")
        if overlap_tries < 1:
            raise ValueError(f"SLOTCON.OVERLAP_TRIES={overlap_tries} must be at least 1")
        if len(pixel_augs) != 2:
            raise ValueError(
                f"SlotConViewsMapper needs 2 pixel augmentations, got {len(pixel_augs)}"
            )
        if len(solarize_probs) != 2 or not all(0.0 <= p <= 1.0 for p in solarize_probs):
            raise ValueError(
                f"SLOTCON.SOLARIZE_PROBS={tuple(solarize_probs)}: expected 2 probabilities"
            )
        self.crop_size = int(crop_size)
        self.crop_scale = check_range("SLOTCON.CROP_SCALE", crop_scale, high=1.0)
        self.crop_ratio = check_range("SLOTCON.CROP_RATIO", crop_ratio)
        self.min_overlap = float(min_overlap)
        self.overlap_tries = int(overlap_tries)
        self.pixel_augs = tuple(pixel_augs)
        self.solarize_probs = tuple(solarize_probs)

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        base = cls._base_config(cfg, is_train)
        aug = cfg.INPUT.SSL_AUG
        blur_probs = tuple(cfg.SLOTCON.BLUR_PROBS)
        if len(blur_probs) != 2:
            raise ValueError(f"SLOTCON.BLUR_PROBS={blur_probs}: expected one per view")
        pixel_augs = tuple(
            PixelAugmentation(
                color_jitter=tuple(cfg.SLOTCON.COLOR_JITTER),
                color_jitter_prob=aug.COLOR_JITTER_PROB,
                grayscale_prob=aug.GRAYSCALE_PROB,
                blur_sigma=tuple(aug.BLUR_SIGMA),
                blur_prob=p,
                blur_kernel_fraction=aug.BLUR_KERNEL_FRACTION,
                image_format=cfg.INPUT.FORMAT,
            )
            for p in blur_probs
        )
        return {
            "crop_size": cfg.SLOTCON.CROP_SIZE,
            "crop_scale": tuple(cfg.SLOTCON.CROP_SCALE),
            "crop_ratio": tuple(cfg.SLOTCON.CROP_RATIO),
            "min_overlap": cfg.SLOTCON.MIN_OVERLAP,
            "overlap_tries": cfg.SLOTCON.OVERLAP_TRIES,
            "pixel_augs": pixel_augs,
            "solarize_probs": tuple(cfg.SLOTCON.SOLARIZE_PROBS),
            "image_format": base["image_format"],
            "flip_prob": base["flip_prob"],
            "draft_decode": base["draft_decode"],
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
            tensor = self.pixel_augs[i](chw_tensor(hflip_image(view) if flipped else view))
            if torch.rand(1).item() < self.solarize_probs[i]:
                tensor = v2.functional.solarize(tensor, threshold=128)
            views.append(
                {
                    "image": tensor,
                    "boxes": Boxes(torch.tensor([[0.0, 0.0, s, s]])),
                    "crop_box": torch.tensor([x, y, x + w, y + h], dtype=torch.float32),
                    "flipped": flipped,
                }
            )
        return views
