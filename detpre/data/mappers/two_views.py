"""
MoCo-v2's two random-resized crops, and the base of the mappers whose views are a box in an
image (MoCo-v2, InsLoc): ``{"image": uint8 Tensor (3, H, W) in INPUT.FORMAT order, "boxes": Boxes
(1, 4) XYXY absolute pixels of that view}``, flipped together and pixel-augmented; the query and
its key. Reading and skipping images is :class:`PretextMapper`'s (``base.py``).
"""

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes
from fvcore.transforms.transform import HFlipTransform

from ...views import BOXES, IMAGE
from ..build import PRETRAIN_MAPPER_REGISTRY
from ..transforms.crops import chw_tensor, hflip_image, resize_image, sample_crop
from ..transforms.pixel_aug import PixelAugmentation
from .base import PretextMapper, check_range

__all__ = ["TwoViewsMapper", "TwoCropsMapper"]


class TwoViewsMapper(PretextMapper):
    """
    Base of the box-view mappers (MoCo-v2, InsLoc): turns an (H, W, 3) uint8 array plus its box
    into a view (random horizontal flip of both, then the pixel augmentation,
    :meth:`make_view`). Subclasses implement :meth:`make_views`.
    """

    def __init__(self, *, image_format, pixel_aug, flip_prob, draft_decode=True):
        """
        Args:
            image_format (str): INPUT.FORMAT, "RGB" or "BGR".
            pixel_aug (callable): uint8 (3, H, W) tensor -> uint8 (3, H, W) tensor.
            flip_prob (float): probability of a horizontal flip of each view.
            draft_decode (bool): see :class:`PretextMapper`.
        """
        super().__init__(image_format=image_format, draft_decode=draft_decode)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"INPUT.SSL_AUG.FLIP_PROB={flip_prob} is not a probability")
        self.pixel_aug = pixel_aug
        self.flip = T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False)

    @classmethod
    def _base_config(cls, cfg, is_train):
        cls.check_train(is_train)
        return {
            "image_format": cfg.INPUT.FORMAT,
            "pixel_aug": PixelAugmentation(cfg),
            "flip_prob": cfg.INPUT.SSL_AUG.FLIP_PROB,
            "draft_decode": cfg.INPUT.SSL_AUG.DRAFT_DECODE,
        }

    def make_view(self, image, box):
        """
        Args:
            image (np.ndarray): (H, W, 3) uint8, the geometry of the view done.
            box (sequence[float]): XYXY box in absolute pixels of ``image``.

        Returns:
            dict: ``{"image": uint8 Tensor (3, H, W), "boxes": Boxes (1, 4)}``, flipped together
            with probability ``flip_prob``, then pixel-augmented.
        """
        boxes = np.asarray([box], dtype=np.float64)
        tfm = self.flip.get_transform(image)
        if isinstance(tfm, HFlipTransform):
            image = hflip_image(image)
        boxes = tfm.apply_box(boxes)
        return {
            IMAGE: self.pixel_aug(chw_tensor(image)),
            BOXES: Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
        }


@PRETRAIN_MAPPER_REGISTRY.register()
class TwoCropsMapper(TwoViewsMapper):
    """
    MoCo-v2's two views (Chen et al., "Improved Baselines with Momentum Contrastive Learning",
    2020): two independent random-resized crops of the image (torchvision semantics) resized to
    ``crop_size`` squares, each flipped and pixel-augmented. The box of each view is the whole
    view, so box-pooling models read MoCo-v2 as whole-image contrast.
    """

    @configurable
    def __init__(
        self, *, crop_size, crop_scale, crop_ratio, image_format, pixel_aug, flip_prob, draft_decode
    ):
        """
        Args:
            crop_size (int): side of each square view.
            crop_scale (tuple[float, float]): crop area range, as a fraction of the image.
            crop_ratio (tuple[float, float]): crop aspect-ratio range (log-uniform).
            image_format, pixel_aug, flip_prob, draft_decode: see :class:`TwoViewsMapper`.
        """
        super().__init__(
            image_format=image_format,
            pixel_aug=pixel_aug,
            flip_prob=flip_prob,
            draft_decode=draft_decode,
        )
        if crop_size < 1:
            raise ValueError(f"MOCO.CROP_SIZE={crop_size} must be a positive side in pixels")
        self.crop_size = int(crop_size)
        self.crop_scale = check_range("MOCO.CROP_SCALE", crop_scale, high=1.0)
        self.crop_ratio = check_range("MOCO.CROP_RATIO", crop_ratio)

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        # dataset_dicts: part of the pretext-mapper signature; MoCo-v2 needs no other image.
        return {
            "crop_size": cfg.MOCO.CROP_SIZE,
            "crop_scale": tuple(cfg.MOCO.CROP_SCALE),
            "crop_ratio": tuple(cfg.MOCO.CROP_RATIO),
            **cls._base_config(cfg, is_train),
        }

    def make_views(self, image, dataset_dict):
        s = self.crop_size
        crops = [sample_crop(*image.shape, self.crop_scale, self.crop_ratio) for _ in range(2)]
        views = self.resized_crops(image, crops, [(s, s)] * 2)
        return [self.make_view(view, (0, 0, s, s)) for view in views]
