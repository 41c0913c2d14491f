"""
The base of the mappers whose views are a box in an image (MoCo-v2, InsLoc): ``{"image": uint8 Tensor (3, H, W) in INPUT.FORMAT order, "boxes": Boxes
(1, 4) XYXY absolute pixels of that view}``, flipped together and pixel-augmented; the query and
its key. Reading and skipping images is :class:`PretextMapper`'s (``base.py``).
"""

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Boxes
from fvcore.transforms.transform import HFlipTransform

from ...views import BOXES, IMAGE
from ..transforms.crops import chw_tensor, hflip_image
from ..transforms.pixel_aug import PixelAugmentation
from .base import PretextMapper

__all__ = ["TwoViewsMapper"]


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
