"""
Two-view pretext mappers: the shared base (decoding, skipping unreadable images, the final flip
and pixel augmentation of each view) and MoCo-v2's two random-resized crops.

Every pretext mapper takes one Detectron2 dataset dict (labels ignored) and returns
``{"file_name", "image_id", "views": [...]}``, or None when the image cannot be read (Detectron2's
``MapDataset`` then tries another index); what a view holds besides its ``"image"`` is the
method's (docs/architecture.md, "Views"). The two views of MoCo-v2 and InsLoc made here are
``{"image": uint8 Tensor (3, H, W) in INPUT.FORMAT order, "boxes": Boxes (1, 4) XYXY absolute
pixels of that view}``: the query and its key.
"""

import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes
from fvcore.transforms.transform import HFlipTransform

from ..build import PRETRAIN_MAPPER_REGISTRY
from ..image_io import CorruptImageError, ImageFile
from ..transforms.crops import chw_tensor, hflip_image, resize_image, sample_crop
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

    def __init__(self, *, image_format, pixel_aug, flip_prob, draft_decode=True):
        """
        Args:
            image_format (str): INPUT.FORMAT, "RGB" or "BGR".
            pixel_aug (callable): uint8 (3, H, W) tensor -> uint8 (3, H, W) tensor.
            flip_prob (float): probability of a horizontal flip of each view.
            draft_decode (bool): decode a JPEG at 1/2, 1/4 or 1/8 size when every crop taken
                from it still keeps at least its output size (:meth:`ImageFile.resized_crops`).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={image_format!r}: pretext mappers read 'RGB' or 'BGR'")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"INPUT.SSL_AUG.FLIP_PROB={flip_prob} is not a probability")
        self.image_format = image_format
        self.pixel_aug = pixel_aug
        self.flip = T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False)
        self.draft_decode = bool(draft_decode)
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
            "draft_decode": cfg.INPUT.SSL_AUG.DRAFT_DECODE,
        }

    def unreadable(self, error, skip=True):
        """
        Log an unreadable file, add it to ``unreadable_files`` and count a skipped image.

        Args:
            error (CorruptImageError): the failure, naming the file.
            skip (bool): whether the dataset image is skipped (counted in ``num_skipped``) or
                only this file (e.g. a background, which the caller replaces).
        """
        self.unreadable_files.add(error.file_name)
        self.num_skipped += int(skip)
        action = "skipping the image" if skip else "drawing another"
        logger.warning(
            f"{type(self).__name__}: {error}; {action} ({self.num_skipped} images skipped, "
            f"{len(self.unreadable_files)} unreadable files so far)"
        )

    def open(self, file_name, skip=True):
        """
        Args:
            file_name (str): image path.
            skip (bool): see :meth:`unreadable`.

        Returns:
            ImageFile or None: the file read once, header parsed, in ``image_format``; None
            (logged, see :meth:`unreadable`) when it is missing or its header is unreadable.
        """
        try:
            return ImageFile(file_name, self.image_format)
        except CorruptImageError as e:
            self.unreadable(e, skip)
            return None

    def resized_crops(self, image, crops, sizes, resize=resize_image):
        """
        Args:
            image (ImageFile): the opened file.
            crops (list[tuple[int, int, int, int]]): (y, x, h, w) in its full-size pixels.
            sizes (list[tuple[int, int]]): (out_h, out_w) per crop.
            resize (callable): see :meth:`ImageFile.resized_crops`.

        Returns:
            list[np.ndarray]: (out_h, out_w, 3) uint8 per crop, decoded once (at a reduced size
            where ``draft_decode`` and the crops allow).

        Raises:
            CorruptImageError: the pixels cannot be decoded.
        """
        return image.resized_crops(crops, sizes, resize=resize, reduce=self.draft_decode)

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
            "image": self.pixel_aug(chw_tensor(image)),
            "boxes": Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
        }

    def make_views(self, image, dataset_dict):
        """
        Args:
            image (ImageFile): the dataset image, read and its header parsed; its pixels are
                decoded by the subclass (:meth:`resized_crops` or ``image.decode()``).
            dataset_dict (dict): its dataset dict.

        Returns:
            list[dict] or None: [query_view, key_view], or None to skip the image.

        Raises:
            CorruptImageError: the image's pixels cannot be decoded (the image is skipped).
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
        image = self.open(file_name)
        if image is None:
            return None
        try:
            views = self.make_views(image, dataset_dict)
        except CorruptImageError as e:
            if e.file_name != file_name:
                raise
            self.unreadable(e)
            return None
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
