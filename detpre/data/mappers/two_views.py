"""
Two-view pretext mappers: the shared base (decoding, skipping unreadable images, the final flip
and pixel augmentation of each view) and MoCo-v2's two random-resized crops.

Contract, shared by every pretraining method: a mapper takes one Detectron2 dataset dict
(labels ignored) and returns ``{"file_name", "image_id", "views": [query_view, key_view]}``,
each view ``{"image": uint8 Tensor (3, H, W) in INPUT.FORMAT order, "boxes": Boxes (1, 4) XYXY
absolute pixels of that view}``, or None when the image cannot be read (Detectron2's
``MapDataset`` then tries another index).
"""

import logging

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes

from ..build import PRETRAIN_MAPPER_REGISTRY
from ..image_io import CorruptImageError, read_image
from ..transforms.crops import resize_image, sample_crop
from ..transforms.pixel_aug import PixelAugmentation

__all__ = ["TwoViewsMapper", "TwoCropsMapper"]

logger = logging.getLogger(__name__)


def check_range(key, values, high=None):
    """
    Args:
        key (str): the config key, named in the error.
        values (sequence[float]): the (min, max) pair to check.
        high (float or None): inclusive upper bound of max.

    Returns:
        tuple: ``values``, checked to be ``0 < min <= max [<= high]``.
    """
    values = tuple(values)
    if not (
        len(values) == 2 and 0 < values[0] <= values[1] and (high is None or values[1] <= high)
    ):
        bound = f" <= {high}" if high is not None else ""
        raise ValueError(f"{key}={values}: expected (min, max) with 0 < min <= max{bound}")
    return values


class TwoViewsMapper:
    """
    Base of the two-view mappers: reads images in ``image_format`` (logging, counting and
    skipping unreadable ones), and turns an (H, W, 3) uint8 array plus its box into a view
    (random horizontal flip of both, then the pixel augmentation). Subclasses implement
    :meth:`make_views`.
    """

    def __init__(self, *, image_format, pixel_aug, flip_prob):
        """
        Args:
            image_format (str): INPUT.FORMAT, "RGB" or "BGR".
            pixel_aug (callable): uint8 (3, H, W) tensor -> uint8 (3, H, W) tensor.
            flip_prob (float): probability of a horizontal flip of each view.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={image_format!r}: pretext mappers read 'RGB' or 'BGR'")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"INPUT.SSL_AUG.FLIP_PROB={flip_prob} is not a probability")
        self.image_format = image_format
        self.pixel_aug = pixel_aug
        self.flip = T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False)
        # Per process (each loader worker keeps its own, and logs them with every failure): the
        # dataset images skipped because they could not be read, and every unreadable file seen.
        self.num_skipped = 0
        self.unreadable_files = set()

    @classmethod
    def _base_config(cls, cfg, is_train):
        if not is_train:
            raise ValueError(f"{cls.__name__} builds training views only (is_train=False given)")
        return {
            "image_format": cfg.INPUT.FORMAT,
            "pixel_aug": PixelAugmentation(cfg),
            "flip_prob": cfg.INPUT.SSL_AUG.FLIP_PROB,
        }

    def read(self, file_name, skip=True):
        """
        Args:
            file_name (str): image path.
            skip (bool): whether a failure skips the dataset image (counted in ``num_skipped``)
                or only this file (e.g. a background, which the caller replaces).

        Returns:
            np.ndarray or None: (H, W, 3) uint8 in ``image_format``; None, logged with the file
            name and added to ``unreadable_files``, when the file is missing or undecodable.
        """
        try:
            image = read_image(file_name, format="RGB")
        except CorruptImageError as e:
            self.unreadable_files.add(file_name)
            self.num_skipped += int(skip)
            action = "skipping the image" if skip else "drawing another"
            logger.warning(
                f"{type(self).__name__}: {e}; {action} ({self.num_skipped} images skipped, "
                f"{len(self.unreadable_files)} unreadable files so far)"
            )
            return None
        if self.image_format == "BGR":
            # Detectron2's BGR is a reversed-stride view, ~100x slower to copy than this.
            return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        return image

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
        image = tfm.apply_image(image)
        boxes = tfm.apply_box(boxes)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {
            "image": self.pixel_aug(tensor),
            "boxes": Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
        }

    def make_views(self, image, dataset_dict):
        """
        Args:
            image (np.ndarray): (H, W, 3) uint8, the decoded dataset image.
            dataset_dict (dict): its dataset dict.

        Returns:
            list[dict] or None: [query_view, key_view], or None to skip the image.
        """
        raise NotImplementedError

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): a Detectron2 dataset dict with at least "file_name".

        Returns:
            dict or None: ``{"file_name", "image_id", "views"}``; None skips the image.
        """
        file_name = dataset_dict["file_name"]
        image = self.read(file_name)
        if image is None:
            return None
        views = self.make_views(image, dataset_dict)
        if views is None:
            return None
        return {"file_name": file_name, "image_id": dataset_dict.get("image_id"), "views": views}


@PRETRAIN_MAPPER_REGISTRY.register()
class TwoCropsMapper(TwoViewsMapper):
    """
    MoCo-v2's two views (Chen et al., "Improved Baselines with Momentum Contrastive Learning",
    2020): two independent random-resized crops of the image (torchvision semantics) resized to
    ``crop_size`` squares, each flipped and pixel-augmented. The box of each view is the whole
    view, so box-pooling models read MoCo-v2 as whole-image contrast.
    """

    @configurable
    def __init__(self, *, crop_size, crop_scale, crop_ratio, image_format, pixel_aug, flip_prob):
        """
        Args:
            crop_size (int): side of each square view.
            crop_scale (tuple[float, float]): crop area range, as a fraction of the image.
            crop_ratio (tuple[float, float]): crop aspect-ratio range (log-uniform).
            image_format, pixel_aug, flip_prob: see :class:`TwoViewsMapper`.
        """
        super().__init__(image_format=image_format, pixel_aug=pixel_aug, flip_prob=flip_prob)
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
        views = []
        for _ in range(2):
            y, x, h, w = sample_crop(*image.shape[:2], self.crop_scale, self.crop_ratio)
            view = resize_image(image[y : y + h, x : x + w], s, s)
            views.append(self.make_view(view, (0, 0, s, s)))
        return views
