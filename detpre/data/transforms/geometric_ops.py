"""
Geometric transforms of the strong augmentation presets: the affine ops of the detection
AutoAugment op pool (rotate, shear, translate; Zoph et al., "Learning Data Augmentation Strategies
for Object Detection", ECCV 2020) and a large-scale-jitter crop. They move the image, boxes,
polygons and masks together, and clip polygons to the output image.
"""

import cv2
import numpy as np
from detectron2.data import transforms as T

__all__ = [
    "AffineTransform",
    "PolygonClipCropTransform",
    "PolygonClipFixedSizeCrop",
    "clip_polygons",
    "rotate_transform",
    "shear_transform",
    "translate_transform",
]


def _clip_half_plane(poly, axis, bound, keep_above):
    # One Sutherland-Hodgman step: keep the part of the closed polygon with coord >= bound
    # (keep_above) or <= bound. Vertex i contributes the crossing of edge (i-1, i), then itself.
    d = poly[:, axis] - bound if keep_above else bound - poly[:, axis]
    inside = d >= 0
    prev, d_prev = np.roll(poly, 1, axis=0), np.roll(d, 1)
    crossing = inside != np.roll(inside, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crossing, d_prev / (d_prev - d), 0.0)
    points = np.stack([prev + t[:, None] * (poly - prev), poly], axis=1)
    return points[np.stack([crossing, inside], axis=1)]


def clip_polygons(polygons, width, height):
    """
    Clip polygons to the image rectangle ``[0, width] x [0, height]`` (Sutherland-Hodgman).
    Detectron2's ``CropTransform.apply_polygons`` does this with shapely, which detpre does not
    require.

    Args:
        polygons (list[ndarray]): each of shape (N, 2), (x, y) in absolute coordinates.
        width, height (float): the image size.

    Returns:
        list[ndarray]: the clipped polygons, each of shape (M, 2) with M >= 3; polygons left with
        no area are dropped.
    """
    clipped = []
    for poly in polygons:
        poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        for axis, bound, keep_above in ((0, 0, True), (0, width, False), (1, 0, True)):
            if len(poly):
                poly = _clip_half_plane(poly, axis, bound, keep_above)
        if len(poly):
            poly = _clip_half_plane(poly, 1, height, False)
        if len(poly) >= 3 and np.ptp(poly[:, 0]) > 0 and np.ptp(poly[:, 1]) > 0:
            clipped.append(poly)
    return clipped


class AffineTransform(T.Transform):
    """
    An affine map of the image plane onto an image of the same size, ``p' = A p + t``, in
    Detectron2's continuous coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)). The image is
    resampled bilinearly with a constant fill, masks by nearest neighbour with 0; boxes follow
    their four corners (Detectron2's ``apply_box``) and polygons are clipped to the image.
    """

    def __init__(self, matrix, h, w, fill=128, interp=cv2.INTER_LINEAR):
        """
        Args:
            matrix (ndarray): (2, 3) ``[A | t]``, input -> output coordinates.
            h, w (int): the image size (input and output).
            fill (int): the value of the image pixels mapped from outside the input.
            interp (int): the OpenCV interpolation of the image.
        """
        super().__init__()
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (2, 3):
            raise ValueError(f"An affine matrix is 2x3, got shape {matrix.shape}")
        self._set_attributes(dict(matrix=matrix, h=h, w=w, fill=fill, interp=interp))

    def _pixel_matrix(self):
        # OpenCV puts pixel centres at integers: shift by half a pixel on both sides.
        a, t = self.matrix[:, :2], self.matrix[:, 2]
        return np.concatenate([a, (t + a @ [0.5, 0.5] - 0.5)[:, None]], axis=1)

    def _warp(self, img, interp, fill):
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"Expected an image of size {(self.h, self.w)}, got {img.shape[:2]}")
        border = (fill,) * (img.shape[2] if img.ndim == 3 else 1)
        out = cv2.warpAffine(
            img, self._pixel_matrix(), (self.w, self.h), flags=interp, borderValue=border
        )
        return out.reshape(img.shape)

    def apply_image(self, img, interp=None):
        return self._warp(img, self.interp if interp is None else interp, self.fill)

    def apply_segmentation(self, segmentation):
        return self._warp(segmentation, cv2.INTER_NEAREST, 0)

    def apply_coords(self, coords):
        coords = np.asarray(coords, dtype=np.float64)
        return coords @ self.matrix[:, :2].T + self.matrix[:, 2]

    def apply_polygons(self, polygons):
        return clip_polygons([self.apply_coords(p) for p in polygons], self.w, self.h)


def rotate_transform(h, w, degrees, fill=128):
    """
    Rotation about the image centre, counter-clockwise on screen for ``degrees > 0``, keeping the
    image size (corners are cut, uncovered pixels get ``fill``).

    Args:
        h, w (int): image size.
        degrees (float): the angle.
        fill (int): the image fill value.

    Returns:
        AffineTransform
    """
    return AffineTransform(cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0), h, w, fill)


def shear_transform(h, w, factor, horizontal, fill=128):
    """
    Shear about the top-left corner, as the detection AutoAugment code: ``x' = x + factor * y``
    (horizontal) or ``y' = y + factor * x`` (vertical).

    Args:
        h, w (int): image size.
        factor (float): the shear.
        horizontal (bool): shear along x (ShearX) or y (ShearY).
        fill (int): the image fill value.

    Returns:
        AffineTransform
    """
    matrix = [[1.0, factor, 0.0], [0.0, 1.0, 0.0]] if horizontal else [[1, 0, 0], [factor, 1, 0]]
    return AffineTransform(matrix, h, w, fill)


def translate_transform(h, w, pixels, horizontal, fill=128):
    """
    Shift the image content by ``pixels`` along x (horizontal) or y.

    Args:
        h, w (int): image size.
        pixels (float): the shift, in pixels.
        horizontal (bool): shift along x (TranslateX) or y (TranslateY).
        fill (int): the image fill value.

    Returns:
        AffineTransform
    """
    tx, ty = (pixels, 0.0) if horizontal else (0.0, pixels)
    return AffineTransform([[1.0, 0.0, tx], [0.0, 1.0, ty]], h, w, fill)


class PolygonClipCropTransform(T.CropTransform):
    """Detectron2's ``CropTransform`` with polygons clipped by ``clip_polygons`` (no shapely)."""

    def apply_polygons(self, polygons):
        return clip_polygons(
            [self.apply_coords(np.array(p, dtype=np.float64)) for p in polygons], self.w, self.h
        )


class PolygonClipFixedSizeCrop(T.FixedSizeCrop):
    """
    Detectron2's ``FixedSizeCrop`` (the crop of large scale jitter, Ghiasi et al. 2021 / ViTDet)
    whose crop clips polygons without shapely. Instance masks are padded with 0 (not with the
    semantic-segmentation ignore value 255, which would turn the padding into foreground).

    The offset is drawn per axis, as the TF detection input pipeline (``resize_and_crop_image``:
    ``max_offset * tf.random.uniform([2], 0, 1)``, truncated to integers); Detectron2's draws one
    uniform for both axes, so its crops slide along the diagonal only.
    """

    def __init__(self, crop_size, pad=True, pad_value=128.0, seg_pad_value=0):
        """
        Args:
            crop_size (tuple[int, int]): output (height, width).
            pad (bool): pad images smaller than ``crop_size`` on the right and bottom.
            pad_value (float): the image padding value.
            seg_pad_value (int): the mask padding value.
        """
        super().__init__(crop_size, pad=pad, pad_value=pad_value, seg_pad_value=seg_pad_value)

    def _get_crop(self, image):
        height, width = image.shape[:2]
        out_h, out_w = self.crop_size
        max_offset = np.maximum(np.subtract((height, width), (out_h, out_w)), 0)
        y0, x0 = (max_offset * np.random.uniform(0.0, 1.0, size=2)).astype(int)
        return PolygonClipCropTransform(int(x0), int(y0), out_w, out_h, width, height)
