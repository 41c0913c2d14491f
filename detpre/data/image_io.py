"""
Image reading with a clear error for unreadable files and a log line for PIL mode conversions.

Pixels are decoded as Detectron2's ``read_image`` does (EXIF orientation applied, then its
``convert_PIL_to_numpy``); this module adds what a long run on real-world data needs: the name of
the file in every error, a note when PIL silently converts a grayscale, CMYK, palette or alpha
image, one read of each file (the header and the pixels come from the same bytes), and
:class:`ImageFile`, which decodes a JPEG at a reduced size when the crops taken from it allow.
"""

import io
import logging
import math

import cv2
import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image

from .transforms.crops import resize_image, scale_crop

__all__ = ["CorruptImageError", "ImageFile", "read_image", "read_image_size"]

logger = logging.getLogger(__name__)

# What PIL raises on a truncated or undecodable file (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)
# Formats of detectron2's read_image that are not PIL modes.
_EXTRA_FORMATS = (None, "BGR", "YUV-BT.601")
# EXIF orientations that transpose the image (detectron2 applies them when reading).
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
# Files whose mode conversion was logged already (once per file and process).
_LOGGED_CONVERSIONS = set()
# The shrink factors libjpeg decodes at directly (DCT scaling), through PIL's draft mode.
_DRAFT_FACTORS = (8, 4, 2)


class CorruptImageError(OSError):
    """
    An image file that is missing, truncated or cannot be decoded. The message names the file;
    ``file_name`` holds it.
    """

    def __init__(self, message, file_name=None):
        super().__init__(message)
        self.file_name = file_name


def _corrupt(file_name, err):
    if isinstance(err, FileNotFoundError):
        reason = "the file does not exist"
    else:
        reason = f"{type(err).__name__}: {err}"
    return CorruptImageError(f"Cannot read image {file_name}: {reason}", file_name)


def _log_conversion(file_name, image, format):
    target = "RGB" if format in ("BGR", "YUV-BT.601") else format
    if format is None or image.mode == target or file_name in _LOGGED_CONVERSIONS:
        return
    _LOGGED_CONVERSIONS.add(file_name)
    has_alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
    note = "; its alpha channel is dropped" if has_alpha else ""
    logger.info(
        f"Image {file_name} has PIL mode {image.mode!r}: converted to {target}{note} "
        "(logged once per file)."
    )


def _exif_orientation(image):
    try:
        return image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a malformed EXIF block; detectron2 then leaves the image as it is
        return None


def read_image(file_name, format=None):
    """
    Read an image with Detectron2's :func:`detectron2.data.detection_utils.read_image` (EXIF
    orientation applied), logging once per file when PIL converts its mode (grayscale, CMYK,
    palette, alpha) to the requested format.

    Args:
        file_name (str): image path (any PathManager path).
        format (str or None): "RGB", "BGR", "YUV-BT.601", another PIL mode, or None to keep the
            file's own mode.

    Returns:
        np.ndarray: HWC image, uint8 (float for "YUV-BT.601"), C = 3 for "RGB" / "BGR".

    Raises:
        CorruptImageError: the file is missing, truncated or cannot be decoded.
        ValueError: ``format`` is not a format Detectron2 can read.
    """
    return ImageFile(file_name, format).decode()


def read_image_size(file_name):
    """
    The size of an image as :func:`read_image` will return it (EXIF rotation applied), read from
    the file header without decoding the pixels.

    Args:
        file_name (str): image path.

    Returns:
        tuple[int, int]: (height, width).

    Raises:
        CorruptImageError: the file is missing or its header cannot be decoded.
    """
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as image:
            return _oriented_size(image)
    except _DECODE_ERRORS as e:
        raise _corrupt(file_name, e) from e


def _oriented_size(image):
    """(height, width) of an opened image once its EXIF orientation is applied."""
    width, height = image.size
    if _exif_orientation(image) in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width


class ImageFile:
    """
    An image file read once: the constructor reads its bytes and parses its header (size, EXIF
    orientation, mode); :meth:`decode` and :meth:`resized_crops` decode the pixels from those
    bytes, at full size or, for a JPEG whose every crop allows it, at 1/2, 1/4 or 1/8 of it
    (libjpeg's DCT scaling through PIL's draft mode, which skips most of the decoding work).

    Sizes and crops are in the coordinates of the full-size image with its EXIF orientation
    applied, whatever size is decoded: the geometry a caller samples does not depend on the
    decoding.
    """

    def __init__(self, file_name, format="RGB"):
        """
        Args:
            file_name (str): image path (any PathManager path).
            format (str or None): "RGB", "BGR", "YUV-BT.601", another PIL mode, or None to keep
                the file's own mode (see :func:`read_image`).

        Raises:
            CorruptImageError: the file is missing or its header cannot be parsed.
            ValueError: ``format`` is not a format Detectron2 can read.
        """
        if format not in _EXTRA_FORMATS and format not in Image.MODES:
            raise ValueError(
                f"Unknown image format {format!r} for {file_name}: use 'RGB', 'BGR', "
                "'YUV-BT.601' or a PIL mode."
            )
        self.file_name = file_name
        self.format = format
        try:
            with PathManager.open(file_name, "rb") as f:
                self._data = f.read()
            with self._open() as header:
                self.height, self.width = _oriented_size(header)
                self.is_jpeg = header.format == "JPEG"
                _log_conversion(file_name, header, format)
        except _DECODE_ERRORS as e:
            raise _corrupt(file_name, e) from e

    def _open(self):
        return Image.open(io.BytesIO(self._data))

    @property
    def shape(self):
        """tuple[int, int]: (height, width) of the full-size image, EXIF orientation applied."""
        return self.height, self.width

    def draft_factor(self, reduction):
        """
        Args:
            reduction (float): the largest acceptable shrink factor of each side.

        Returns:
            int: the factor :meth:`decode` shrinks by: the largest of 8, 4, 2 not above
            ``reduction`` for a JPEG, else 1.
        """
        if not self.is_jpeg:
            return 1
        return next((f for f in _DRAFT_FACTORS if f <= reduction), 1)

    def decode(self, reduction=1.0):
        """
        Args:
            reduction (float): the largest acceptable shrink factor of each side (>= 1). A JPEG
                decodes at 1 / :meth:`draft_factor`, each side rounded up (so never below
                ``side / reduction``); other formats at full size.

        Returns:
            np.ndarray: (h, w, C) in ``format``, uint8 (float for "YUV-BT.601"); (h, w) ==
            :attr:`shape` at full size.

        Raises:
            CorruptImageError: the pixels cannot be decoded (e.g. a truncated file).
        """
        factor = self.draft_factor(reduction)
        try:
            with self._open() as image:
                if factor > 1:
                    w, h = image.size
                    image.draft(None, (math.ceil(w / factor), math.ceil(h / factor)))
                image = utils._apply_exif_orientation(image)
                mode = "RGB" if self.format == "BGR" else self.format
                if image.mode == mode:
                    array = np.asarray(image)  # PIL's convert to its own mode only copies
                else:
                    array = utils.convert_PIL_to_numpy(image, mode)
        except _DECODE_ERRORS as e:
            raise _corrupt(self.file_name, e) from e
        if self.format == "BGR":
            # Detectron2's BGR is a reversed-stride view, ~100x slower to copy than this.
            return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        return array

    def resized_crops(self, crops, sizes, resize=resize_image, reduce=True):
        """
        Crops of the image resized to their output sizes, from one decode at the largest JPEG
        reduction that keeps every crop at least as large as its output on both sides.

        Args:
            crops (list[tuple[int, int, int, int]]): (y, x, h, w) per crop, in pixels of the
                full-size image (:attr:`shape`).
            sizes (list[tuple[int, int]]): (out_h, out_w) per crop.
            resize (callable): (image (h, w, C), out_h, out_w) -> (out_h, out_w, C) array.
            reduce (bool): allow the reduced decode (False: always full size, the crops' pixels
                exactly those of :func:`read_image`).

        Returns:
            list[np.ndarray]: (out_h, out_w, C) per crop. At a reduction each crop's bounds are
            rounded to the decoded grid: they move by at most half a decoded pixel, under half an
            output pixel.
        """
        if len(crops) != len(sizes):
            raise ValueError(f"{len(crops)} crops but {len(sizes)} output sizes")
        reduction = 1.0
        if reduce and crops:
            reduction = min(min(h / oh, w / ow) for (_, _, h, w), (oh, ow) in zip(crops, sizes))
        image = self.decode(reduction)
        scale_y, scale_x = image.shape[0] / self.height, image.shape[1] / self.width
        out = []
        for crop, (oh, ow) in zip(crops, sizes):
            y, x, h, w = scale_crop(crop, scale_y, scale_x, image.shape[:2])
            out.append(resize(image[y : y + h, x : x + w], oh, ow))
        return out
