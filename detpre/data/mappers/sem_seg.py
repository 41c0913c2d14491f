"""The semantic-segmentation mapper: images and label maps through mmseg's augmentation."""

import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from ..image_io import CorruptImageError, read_image
from ..sem_seg_io import SemSegLabelError, read_sem_seg_label
from ..transforms.sem_seg_aug import build_sem_seg_augmentation
from .finetune import RobustDatasetMapper

__all__ = ["SemSegDatasetMapper"]

logger = logging.getLogger(__name__)


class SemSegDatasetMapper(RobustDatasetMapper):
    """
    Dataset dicts with ``sem_seg_file_name`` -> ``{"image", "sem_seg", "height", "width", ...}``
    for Detectron2's ``SemanticSegmentor``, with :func:`build_sem_seg_augmentation`.

    The label is read unchanged (palette PNGs give their indices) and checked against its image:
    a missing or undecodable label, one of another size, or one with values outside
    [0, ``num_classes``) other than ``ignore_label`` is, in training with ``skip_corrupt_images``,
    logged with its path and a running count (``SemSegDatasetMapper.num_skipped_labels``) and the
    sample skipped (Detectron2's ``MapDataset`` maps another index), as an unreadable image is; in
    any other case it raises :class:`SemSegLabelError` naming the file. In inference the label is
    not read: the evaluator reads (and checks) it.
    """

    # Samples skipped for their label by all instances in this process.
    num_skipped_labels = 0

    @configurable
    def __init__(self, is_train: bool, *, num_classes: int, ignore_label: int, **kwargs):
        """
        Args:
            is_train (bool): training or inference.
            num_classes (int): the dataset's classes (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``).
            ignore_label (int): the label of unlabelled pixels (``IGNORE_VALUE``).
            kwargs: the arguments of :class:`RobustDatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_sem_seg_augmentation(cfg, is_train)
        ret["num_classes"] = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        ret["ignore_label"] = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        return ret

    def _skip_or_raise(self, err):
        if not (self.is_train and self.skip_corrupt_images):
            raise err
        if isinstance(err, SemSegLabelError):
            SemSegDatasetMapper.num_skipped_labels += 1
            logger.warning(
                f"Skipping training sample: {err} ({SemSegDatasetMapper.num_skipped_labels} "
                "skipped for their label so far in this process)."
            )
        else:
            RobustDatasetMapper.num_skipped += 1
            logger.warning(
                f"Skipping training image: {err} ({RobustDatasetMapper.num_skipped} skipped so "
                "far in this process)."
            )
        return None

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): ``file_name`` and ``sem_seg_file_name`` of one image.

        Returns:
            dict or None: the dict without ``sem_seg_file_name``, with "image" (uint8 tensor
            (C, H, W)), "height" / "width" (the original size, the prediction's), and in training
            "sem_seg" (int64 tensor (H, W)); None for a skipped training sample.
        """
        ret = {
            k: v for k, v in dataset_dict.items() if k not in ("sem_seg_file_name", "annotations")
        }
        try:
            image = read_image(dataset_dict["file_name"], format=self.image_format)
        except CorruptImageError as err:
            return self._skip_or_raise(err)
        height, width = image.shape[:2]
        sem_seg = None
        if self.is_train:
            if "sem_seg_file_name" not in dataset_dict:
                raise KeyError(
                    f"Training sample {dataset_dict['file_name']} has no 'sem_seg_file_name': "
                    "the dataset is not a semantic-segmentation dataset"
                )
            try:
                sem_seg = read_sem_seg_label(
                    dataset_dict["sem_seg_file_name"],
                    num_classes=self.num_classes,
                    ignore_label=self.ignore_label,
                    image_size=(height, width),
                )
            except SemSegLabelError as err:
                return self._skip_or_raise(err)
            # Detectron2's transforms resize uint8 maps with PIL (nearest); wider ids as float.
            sem_seg = sem_seg.astype(np.uint8 if sem_seg.max(initial=0) < 256 else np.float32)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        image = aug_input.image
        ret.setdefault("height", height)
        ret.setdefault("width", width)
        ret["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            ret["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype("long"))
        return ret
