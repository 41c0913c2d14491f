"""
Reading semantic-segmentation label PNGs, with errors that name the file.

A label is read *unchanged*: a palette ('P') PNG gives its palette indices, which are the class ids
of Pascal VOC's ``SegmentationClass`` files; 'L', 'I' and 'I;16' PNGs give their values. Converting
to grey levels (``convert("L")``, or Detectron2's ``read_image(..., "L")``) would map the palette
colours of a VOC label to luminances instead, so it is never done. No EXIF rotation is applied: a
label map is stored in its image's pixel order.
"""

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["SemSegLabelError", "read_sem_seg_label"]

# What PIL raises on a truncated or undecodable file (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)
# One-channel PIL modes whose pixels are integer class ids.
_INTEGER_MODES = ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N")
# How many offending values an error lists.
_MAX_LISTED_VALUES = 5


class SemSegLabelError(ValueError):
    """
    A semantic-segmentation label file that is missing, undecodable, of the wrong size or with
    values outside the dataset's classes. The message names the file; ``file_name`` holds it.
    """

    def __init__(self, message, file_name=None):
        super().__init__(message)
        self.file_name = file_name


def _open(path):
    try:
        with PathManager.open(path, "rb") as f:
            image = Image.open(f)
            image.load()
    except FileNotFoundError as err:
        raise SemSegLabelError(
            f"Cannot read semantic-segmentation label {path}: the file does not exist", path
        ) from err
    except _DECODE_ERRORS as err:
        raise SemSegLabelError(
            f"Cannot read semantic-segmentation label {path}: {type(err).__name__}: {err}", path
        ) from err
    return image


def _check_values(path, label, num_classes, ignore_label):
    invalid = (label < 0) | (label >= num_classes)
    if ignore_label is not None:
        invalid &= label != ignore_label
    if not invalid.any():
        return
    values, counts = np.unique(label[invalid], return_counts=True)
    listed = ", ".join(
        f"{v} ({c} pixels)" for v, c in zip(values[:_MAX_LISTED_VALUES], counts.tolist())
    )
    more = len(values) - _MAX_LISTED_VALUES
    if more > 0:
        listed += f" and {more} more values"
    raise SemSegLabelError(
        f"Semantic-segmentation label {path} has {int(invalid.sum())} pixels with values outside "
        f"the valid range [0, {num_classes}) that are not the ignore value {ignore_label}: "
        f"{listed}",
        path,
    )


def read_sem_seg_label(path, *, num_classes, ignore_label=255, image_size=None):
    """
    Read a semantic-segmentation label PNG as class ids, checked against the dataset.

    Args:
        path (str): the label file (PNG, or any one-channel format PIL reads).
        num_classes (int): the dataset's classes; valid ids are ``0 .. num_classes - 1``.
        ignore_label (int or None): the one value allowed outside that range (255 for VOC, ADE20K,
            Cityscapes and the bundled COCO set); None allows none.
        image_size (tuple[int, int] or None): (H, W) of the image the label belongs to; the label
            must have this size when given.

    Returns:
        np.ndarray: (H, W) int64, the label's values (palette indices for a 'P' PNG).

    Raises:
        SemSegLabelError: naming ``path``, when the file is missing or undecodable, has more than
            one channel (an RGB or RGBA label), is not of integer type, is not ``image_size``, or
            holds values outside ``[0, num_classes)`` other than ``ignore_label``.
    """
    if int(num_classes) <= 0:
        raise ValueError(
            f"read_sem_seg_label({path!r}): num_classes must be > 0, got {num_classes}"
        )
    image = _open(path)
    bands = image.getbands()
    if len(bands) > 1:
        raise SemSegLabelError(
            f"Semantic-segmentation label {path} has {len(bands)} channels (PIL mode "
            f"{image.mode!r}); a label must be one channel of class ids: a palette ('P') or "
            f"grey ('L', 'I', 'I;16') PNG, not a colour image",
            path,
        )
    if image.mode not in _INTEGER_MODES:
        raise SemSegLabelError(
            f"Semantic-segmentation label {path} has PIL mode {image.mode!r}, not integer class "
            f"ids (one of {list(_INTEGER_MODES)})",
            path,
        )
    label = np.asarray(image).astype(np.int64)
    if image_size is not None:
        expected = tuple(int(s) for s in image_size)
        if label.shape != expected:
            raise SemSegLabelError(
                f"Semantic-segmentation label {path} is {label.shape[0]}x{label.shape[1]} (HxW) "
                f"but its image is {expected[0]}x{expected[1]}",
                path,
            )
    _check_values(path, label, int(num_classes), ignore_label)
    return label
