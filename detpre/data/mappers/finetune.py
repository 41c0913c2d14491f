"""The fine-tuning mapper: Detectron2's DatasetMapper that survives an unreadable training image."""

import logging

from detectron2.config import configurable
from detectron2.data import DatasetMapper

from ..image_io import CorruptImageError, read_image, read_image_size

__all__ = ["RobustDatasetMapper"]

logger = logging.getLogger(__name__)


class RobustDatasetMapper(DatasetMapper):
    """
    Detectron2's :class:`DatasetMapper`, identical on readable images, with two additions:

    - In training (with ``skip_corrupt_images``), an image that is missing, truncated or cannot be
      decoded is logged with its path and a running count, and the mapper returns None:
      Detectron2's ``MapDataset`` then maps another, randomly chosen index, so the run continues.
      ``RobustDatasetMapper.num_skipped`` counts the skipped images of this process (each data
      loader worker counts its own and logs it).
    - In inference, or with ``skip_corrupt_images=False``, such an image raises
      :class:`CorruptImageError` naming the file: evaluation never silently skips an image.

    A dict without ``height`` / ``width`` (unlabeled image folders) gets them from the file header,
    so aspect-ratio grouping works and predictions are rescaled to the original image size.
    """

    # Images skipped by all instances in this process.
    num_skipped = 0

    @configurable
    def __init__(self, is_train: bool, *, skip_corrupt_images: bool = True, **kwargs):
        """
        Args:
            is_train (bool): training or inference.
            skip_corrupt_images (bool): in training, skip an unreadable image instead of raising.
            kwargs: the arguments of :class:`DatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.skip_corrupt_images = skip_corrupt_images

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["skip_corrupt_images"] = cfg.FINETUNE.SKIP_CORRUPT_IMAGES
        return ret

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): metadata of one image, in Detectron2 Dataset format.

        Returns:
            dict or None: what :class:`DatasetMapper` returns ("image": uint8 tensor (C, H, W),
            "instances" in training); None for a skipped unreadable training image.
        """
        file_name = dataset_dict["file_name"]
        try:
            if "height" not in dataset_dict or "width" not in dataset_dict:
                height, width = read_image_size(file_name)
                dataset_dict = {**dataset_dict, "height": height, "width": width}
            return super().__call__(dataset_dict)
        except Exception as e:
            # Off the hot path: read the image again to tell a bad file from any other failure.
            try:
                read_image(file_name, format=self.image_format)
            except CorruptImageError as err:
                if not (self.is_train and self.skip_corrupt_images):
                    raise err from e
                RobustDatasetMapper.num_skipped += 1
                logger.warning(
                    f"Skipping training image: {err} ({RobustDatasetMapper.num_skipped} skipped "
                    "so far in this process)."
                )
                return None
            raise
