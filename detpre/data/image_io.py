"""
Image reading with a clear error for unreadable files and a log line for PIL mode conversions.

Detectron2's ``read_image`` decodes; this module only adds what a long run on real-world data needs:
the name of the file in every error, and a note when PIL silently converts a grayscale, CMYK,
palette or alpha image.
"""

import logging

from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["CorruptImageError", "read_image", "read_image_size"]

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
    if format not in _EXTRA_FORMATS and format not in Image.MODES:
        raise ValueError(
            f"Unknown image format {format!r} for {file_name}: use 'RGB', 'BGR', 'YUV-BT.601' "
            "or a PIL mode."
        )
    try:
        # Image.open reads the header only: the mode is known before detectron2 decodes.
        with PathManager.open(file_name, "rb") as f, Image.open(f) as header:
            _log_conversion(file_name, header, format)
        return utils.read_image(file_name, format=format)
    except _DECODE_ERRORS as e:
        raise _corrupt(file_name, e) from e


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
            width, height = image.size
            orientation = _exif_orientation(image)
    except _DECODE_ERRORS as e:
        raise _corrupt(file_name, e) from e
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width
