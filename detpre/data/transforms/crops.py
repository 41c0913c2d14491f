"""
Crop geometry shared by the pretext mappers: random-resized-crop parameters, uint8 resizes,
horizontal flips of boxes and images, and the HWC-array-to-CHW-tensor step. Pure functions on numbers and arrays; randomness comes from an ``rng``
argument with Python's ``random`` interface (the module itself by default, which Detectron2's
data loader seeds in every worker).
"""

import math
import random

import cv2
import numpy as np
import torch
from fvcore.transforms.transform import HFlipTransform

__all__ = [
    "AREA_INTERPOLATION_FACTOR",
    "chw_tensor",
    "flip_box",
    "hflip_image",
    "hwc_array",
    "resize_bilinear",
    "resize_image",
    "sample_crop",
    "sample_distorted_crop",
    "scale_crop",
]

# Shrink factor beyond which resize_image averages areas instead of sampling bilinearly.
AREA_INTERPOLATION_FACTOR = 2.0


def sample_crop(height, width, scale, ratio, rng=random):
    """
    Random crop of a given area fraction and log-uniform aspect ratio, with the semantics of
    torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of (area, ratio); the first
    that fits inside the image is placed uniformly at random. If none fits, the fallback is a
    central crop of the whole image clamped to the ratio range (the whole image when its own
    ratio lies inside the range).

    Args:
        height, width (int): image size, both >= 1.
        scale (tuple[float, float]): range of the crop area as a fraction of the image area.
        ratio (tuple[float, float]): range of the crop aspect ratio (width / height), sampled
            uniformly in log space.
        rng: an object with ``uniform(a, b)`` and ``randint(a, b)`` (inclusive), e.g. the
            ``random`` module or a ``random.Random``.

    Returns:
        tuple[int, int, int, int]: (y, x, h, w): the crop is ``image[y:y + h, x:x + w]``, with
        ``1 <= h <= height`` and ``1 <= w <= width``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Cannot crop an image of size {height}x{width}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    # Fallback: central crop, as torchvision.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    # Rounding can reach 0 on an extreme sliver; keep at least one pixel.
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def sample_distorted_crop(height, width, scale, ratio, rng=random, max_attempts=100):
    """
    Random crop with the rule of TensorFlow's ``tf.image.sample_distorted_bounding_box`` (no
    boxes, ``min_object_covered=0``), which LOCA's release uses for all its crops: per attempt an
    aspect ratio uniform in ``ratio`` (not log-uniform), a height uniform between the heights of
    the smallest and the largest allowed areas (so the area is not uniform: 0.32-1 crops of a
    500 x 375 image average 53 % of it, against 60 % for :func:`sample_crop`), the width
    ``round(height * ratio)``, and an offset uniform in ``[0, H - h)`` (``[0, W - w)``), never
    touching the bottom or right edge unless the crop spans the image. After ``max_attempts``
    failures, the whole image.

    Args:
        height, width (int): image size, both >= 1.
        scale (tuple[float, float]): area range as fractions of the image, in (0, 1].
        ratio (tuple[float, float]): aspect-ratio (width / height) range.
        rng: an object with ``random()`` and ``randrange(n)``, e.g. the ``random`` module.
        max_attempts (int): attempts before the whole image (TF's default 100).

    Returns:
        tuple[int, int, int, int]: (y, x, h, w), the crop ``image[y:y + h, x:x + w]``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Cannot crop an image of size {height}x{width}")
    min_area, max_area = scale[0] * height * width, scale[1] * height * width
    for _ in range(max_attempts):
        aspect = rng.random() * (ratio[1] - ratio[0]) + ratio[0]
        h = round(math.sqrt(min_area / aspect))
        max_h = round(math.sqrt(max_area / aspect))
        if round(max_h * aspect) > width:
            # The tallest height whose rounded width still fits.
            max_h = int((width + 0.5 - 1e-7) / aspect)
            if round(max_h * aspect) > width:
                max_h -= 1
        max_h = min(max_h, height)
        h = min(h, max_h)
        if h < max_h:
            h += rng.randrange(max_h - h + 1)
        w = round(h * aspect)
        # Rounding may leave the area just outside the range: one pixel taller, or shorter.
        if w * h < min_area:
            h += 1
            w = round(h * aspect)
        if w * h > max_area:
            h -= 1
            w = round(h * aspect)
        if min_area <= w * h <= max_area and 0 < w <= width and 0 < h <= height:
            y = rng.randrange(height - h) if h < height else 0
            x = rng.randrange(width - w) if w < width else 0
            return y, x, h, w
    return 0, 0, height, width


def scale_crop(crop, scale_y, scale_x, shape):
    """
    A crop of a full-size image mapped onto the same image decoded at another size: each bound
    scaled and rounded to the nearest pixel of the decoded grid, at least one pixel kept.

    Args:
        crop (tuple[int, int, int, int]): (y, x, h, w) in full-size pixels.
        scale_y, scale_x (float): decoded size / full size, per axis.
        shape (tuple[int, int]): (height, width) of the decoded image.

    Returns:
        tuple[int, int, int, int]: (y, x, h, w) in decoded pixels, inside ``shape``; ``crop``
        itself when both scales are 1.
    """
    if scale_y == 1 and scale_x == 1:
        return tuple(crop)
    y, x, h, w = crop
    bounds = []
    for start, length, scale, size in ((y, h, scale_y, shape[0]), (x, w, scale_x, shape[1])):
        lo = min(int(math.floor(start * scale + 0.5)), size - 1)
        hi = min(max(int(math.floor((start + length) * scale + 0.5)), lo + 1), size)
        bounds.append((lo, hi - lo))
    (y, h), (x, w) = bounds
    return y, x, h, w


def resize_image(image, height, width, interpolation=None):
    """
    Resize a uint8 image with OpenCV: bilinear, or area averaging when a side shrinks by more
    than ``AREA_INTERPOLATION_FACTOR`` (where bilinear sampling starts to alias; area averaging
    is ~8x slower at non-integer factors, so it is kept for those).

    Args:
        image (np.ndarray): (H, W, C) or (H, W), uint8.
        height, width (int): output size, both >= 1.
        interpolation (int or None): an OpenCV interpolation flag used at every factor (for
            example ``cv2.INTER_LINEAR``, mmcv's ``imresize`` default, which InsLoc's release
            uses); None picks by the shrink factor as above.

    Returns:
        np.ndarray: (height, width, C) or (height, width), uint8, C-contiguous.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    if interpolation is None:
        factor = max(h / height, w / width)
        interpolation = cv2.INTER_AREA if factor > AREA_INTERPOLATION_FACTOR else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    # OpenCV drops a trailing channel axis of size 1.
    return out.reshape((height, width) + image.shape[2:])


def resize_bilinear(image, height, width):
    """
    :func:`resize_image` bilinear at every factor, without antialiasing: mmcv's ``imresize``
    default (InsLoc's release) and TensorFlow's ``tf.image.resize`` (LOCA's).

    Args:
        image (np.ndarray): (H, W, C) or (H, W), uint8.
        height, width (int): output size, both >= 1.

    Returns:
        np.ndarray: (height, width, C) or (height, width), uint8.
    """
    return resize_image(image, height, width, cv2.INTER_LINEAR)


def flip_box(boxes, width):
    """
    Mirror XYXY boxes of an image of the given width: ``x0' = W - x1``, ``x1' = W - x0``
    (Detectron2's ``HFlipTransform`` convention: coordinates, not pixel indices).

    Args:
        boxes (np.ndarray): (N, 4) XYXY absolute coordinates, float.
        width (int): width of the image the boxes live in.

    Returns:
        np.ndarray: (N, 4) mirrored boxes, still XYXY with x0 <= x1.
    """
    return HFlipTransform(width).apply_box(np.asarray(boxes, dtype=np.float64))


def hflip_image(image):
    """
    Args:
        image (np.ndarray): (H, W, C) or (H, W), uint8.

    Returns:
        np.ndarray: the mirrored image, C-contiguous (OpenCV's flip: ~40x faster than copying
        numpy's reversed view).
    """
    out = cv2.flip(np.ascontiguousarray(image), 1)
    return out.reshape(image.shape)


def chw_tensor(image):
    """
    Args:
        image (np.ndarray): (H, W, C) uint8, C <= 4.

    Returns:
        Tensor: (C, H, W) uint8, contiguous (planes split by OpenCV: ~6x faster than a strided
        transpose copy).
    """
    image = np.ascontiguousarray(image)
    if image.shape[2] == 1:
        return torch.from_numpy(image.transpose(2, 0, 1).copy())
    return torch.from_numpy(np.stack(cv2.split(image)))


def hwc_array(image):
    """
    Args:
        image (Tensor): (C, H, W) uint8 on the CPU, C <= 4.

    Returns:
        np.ndarray: (H, W, C) uint8, C-contiguous (planes merged by OpenCV: ~6x faster than a
        strided transpose copy); the inverse of :func:`chw_tensor`.
    """
    planes = [p.numpy() for p in image.contiguous()]
    return cv2.merge(planes).reshape(image.shape[1], image.shape[2], image.shape[0])
