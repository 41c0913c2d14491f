"""
The base of every pretext mapper: it reads the dataset image (logging, counting and skipping
unreadable ones) and hands it to the method's :meth:`PretextMapper.make_views`.

Every pretext mapper takes one Detectron2 dataset dict (labels ignored) and returns
``{"file_name", "image_id", "views": [...]}``, or None when the image cannot be read (Detectron2's
``MapDataset`` then tries another index); the keys a view may hold are ``detpre/views.py``'s.
"""

import logging

from ..image_io import CorruptImageError, ImageFile
from ..transforms.crops import resize_image

__all__ = ["PretextMapper", "check_range"]

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


class PretextMapper:
    """
    Base of the pretext mappers: reads images in ``image_format`` (logging, counting and
    skipping unreadable ones) and decodes crops of them once (:meth:`resized_crops`); what the
    views are is the subclass's :meth:`make_views`.
    """

    def __init__(self, *, image_format, draft_decode=True):
        """
        Args:
            image_format (str): INPUT.FORMAT, "RGB" or "BGR".
            draft_decode (bool): decode a JPEG at 1/2, 1/4 or 1/8 size when every crop taken
                from it still keeps at least its output size (:meth:`ImageFile.resized_crops`).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={image_format!r}: pretext mappers read 'RGB' or 'BGR'")
        self.image_format = image_format
        self.draft_decode = bool(draft_decode)
        # Per process (each loader worker keeps its own, and logs them with every failure): the
        # dataset images skipped because they could not be read, and every unreadable file seen.
        self.num_skipped = 0
        self.unreadable_files = set()

    @classmethod
    def check_train(cls, is_train):
        """Refuse ``is_train=False``: pretext views are training inputs only."""
        if not is_train:
            raise ValueError(f"{cls.__name__} builds training views only (is_train=False given)")

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
