"""
The selective search backends of the proposal generator. Each takes an HWC uint8 BGR image and
returns XYXY boxes in its coordinates, in the backend's own order:

* ``soco``: SoCo's generator (Wei et al., "Aligning Pretraining for Detection via Object-Level
  Contrastive Learning", NeurIPS 2021; ``selective_search/`` of hologerry/SoCo), which AlignDet's
  proposals come from: the registry's ``selectivesearch`` package (the implementation SoCo's
  script derives from: Felzenszwalb segmentation from scikit-image, colour / texture / size / fill
  similarities, hierarchical grouping) on the full-resolution RGB image, with SoCo's one change:
  the texture histogram bins local binary patterns over [0, 255] (the package's [0, 1] range
  puts every pattern but 0 in its last bin, selectivesearch issue #30). SoCo's parameters: scale
  300, sigma 0.9, min_size 100. Pure Python: about 1 s per COCO image on one core;
* ``opencv``: OpenCV's fast selective search (``cv2.ximgproc``, ``switchToSelectiveSearchFast``)
  on the image resized to fit ``resize`` (512 by default); about as fast, other boxes.
"""

import contextlib
import ctypes
import logging
import warnings

import cv2
import numpy as np
import torch
from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform
from detectron2.structures import Boxes

__all__ = ["BACKENDS", "opencv_selective_search", "soco_selective_search"]

logger = logging.getLogger(__name__)
_LIBC = []  # [ctypes library or None], loaded once per process


def _seed_c_rand(seed):
    """Seed C's rand(), which OpenCV's selective search ranking draws from (no-op where absent)."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None).srand)
        except (OSError, AttributeError):
            _LIBC.append(None)
            logger.warning("Cannot seed C rand(): the selective search order is not reproducible.")
    if _LIBC[0] is not None:
        _LIBC[0](ctypes.c_uint(seed % 2**32))


def _resized(image, resize):
    """The image resized to fit ``resize`` x ``resize`` (None / 0: as is) and its new size."""
    h, w = image.shape[:2]
    new_h, new_w = (
        (h, w) if not resize else ResizeShortestEdge.get_output_shape(h, w, resize, resize)
    )
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if new_h * new_w < h * w else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return image, (new_h, new_w)


def _to_original(rects_xyxy, size, new_size):
    """(N, 4) XYXY boxes of the resized image -> the original image's, clipped."""
    boxes = ResizeTransform(*size, *new_size).inverse().apply_box(rects_xyxy)
    boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    boxes.clip(size)
    return boxes.tensor


def opencv_selective_search(image, *, resize=512, seed=0):
    """
    OpenCV's fast selective search on a resized copy of ``image``.

    Args:
        image (np.ndarray): HWC uint8 BGR image (H, W, 3).
        resize (int or None): the size the image is resized to fit (longer side = ``resize``);
            None or 0 searches the image as it is.
        seed (int): seed of the pseudo-random ranking (Uijlings et al.'s, by hierarchy level).

    Returns:
        Tensor: (N, 4) float32 XYXY boxes in ``image``'s coordinates, in the order selective
        search ranks them.
    """
    small, new_size = _resized(image, resize)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(small)
    search.switchToSelectiveSearchFast()
    _seed_c_rand(seed)
    rects = search.process().astype(np.float32).reshape(-1, 4)  # XYWH
    rects[:, 2:] += rects[:, :2]
    return _to_original(rects, image.shape[:2], new_size)


def _soco_texture_hist(img):
    """
    SoCo's texture histogram of a region: 10 bins per channel of the LBP values over [0, 255],
    L1-normalised by the pixel count.

    Args:
        img (np.ndarray): (P, 3) LBP values of the region's P pixels.

    Returns:
        np.ndarray: (30,) float64.
    """
    hist = [np.histogram(img[:, c], 10, (0.0, 255.0))[0] for c in range(3)]
    return np.concatenate(hist) / len(img)


@contextlib.contextmanager
def _soco_texture(module):
    """Swap the package's texture histogram for SoCo's while a search runs (one process's)."""
    original = module._calc_texture_hist
    module._calc_texture_hist = _soco_texture_hist
    try:
        yield
    finally:
        module._calc_texture_hist = original


def soco_selective_search(
    image, *, scale=300, sigma=0.9, segment_min_size=100, resize=None, seed=0
):
    """
    SoCo's selective search (see the module docstring) of ``image``.

    Args:
        image (np.ndarray): HWC uint8 BGR image (H, W, 3).
        scale, sigma, segment_min_size: Felzenszwalb's ``scale``, ``sigma`` and ``min_size``
            (SoCo: 300, 0.9, 100).
        resize (int or None): search a copy resized to fit ``resize`` (None / 0: full resolution,
            as SoCo); boxes are mapped back.
        seed (int): unused (the search is deterministic); accepted as every backend's.

    Returns:
        Tensor: (N, 4) float32 XYXY boxes ``(min_x, min_y, max_x, max_y)`` with SoCo's pixel-index
        corners (its ``rect`` is ``(min_x, min_y, max_x - min_x, max_y - min_y)``), one per
        region of the hierarchy in creation order (the segments, then each merge).
    """
    from selectivesearch import selectivesearch as ss  # scikit-image is imported here only

    small, new_size = _resized(image, resize)
    rgb = np.ascontiguousarray(small[:, :, ::-1])
    with _soco_texture(ss), warnings.catch_warnings():
        # SoCo passes the float image to local_binary_pattern, which warns about floats.
        warnings.filterwarnings("ignore", message=".*local_binary_pattern.*")
        _, regions = ss.selective_search(rgb, scale=scale, sigma=sigma, min_size=segment_min_size)
    rects = np.array([r["rect"] for r in regions], dtype=np.float32).reshape(-1, 4)
    rects[:, 2:] += rects[:, :2]
    return _to_original(rects, image.shape[:2], new_size)


# name -> (function, its default keyword arguments)
BACKENDS = {
    "soco": (soco_selective_search, dict(scale=300, sigma=0.9, segment_min_size=100, resize=None)),
    "opencv": (opencv_selective_search, dict(resize=512)),
}
