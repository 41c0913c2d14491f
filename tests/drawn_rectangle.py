"""
The drawn-rectangle check of the strong augmentation tests: a filled rectangle of a distinct colour
on a plain image, annotated by its box, its polygon and its RLE mask; after a transform, the box
and the masks that Detectron2's ``transform_instance_annotations`` / ``annotations_to_instances``
produce must match the rectangle's pixels in the transformed image.
"""

import copy

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask

BACKGROUND = (20, 20, 20)
RECTANGLE = (230, 40, 40)
# The fill of the geometric ops and of the crop padding.
FILL = (128, 128, 128)


def draw(h, w, box):
    """An (h, w, 3) uint8 image of BACKGROUND, the pixels of ``box`` (x0, y0, x1, y1) RECTANGLE."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = RECTANGLE
    return img


def annotations(box, h, w):
    """The rectangle's annotation with a polygon, and with an RLE mask."""
    x0, y0, x1, y1 = box
    base = {"bbox": list(map(float, box)), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    poly = dict(base, segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]])
    mask = np.zeros((h, w), np.uint8, order="F")
    mask[y0:y1, x0:x1] = 1
    rle = dict(base, segmentation=mask_util.encode(mask))
    return poly, rle


def rectangle_pixels(image):
    """Pixels whose colour is nearer RECTANGLE than BACKGROUND and FILL: (H, W) bool."""
    colours = np.array([RECTANGLE, BACKGROUND, FILL], np.float32)
    dist = ((image[:, :, None, :].astype(np.float32) - colours) ** 2).sum(-1)
    return dist.argmin(-1) == 0


def pixel_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def transform_annotations(tfms, box, in_shape, out_shape):
    """
    Returns:
        (Instances, Instances): the rectangle's annotation through ``tfms`` with polygon masks,
        and with bitmasks (from RLE), as a DatasetMapper makes them.
    """
    h, w = in_shape[:2]
    out = []
    for ann, fmt in zip(annotations(box, h, w), ("polygon", "bitmask")):
        ann = utils.transform_instance_annotations(copy.deepcopy(ann), tfms, out_shape[:2])
        out.append(utils.annotations_to_instances([ann], out_shape[:2], mask_format=fmt))
    return out


def geometric_part(tfms):
    """The transforms of ``tfms`` that may move pixels (colour ops and Cutout left out)."""
    flat = tfms.transforms if isinstance(tfms, T.TransformList) else [tfms]
    return T.TransformList([t for t in flat if not isinstance(t, T.ColorTransform)])


def check_rectangle(tfms, image, box, pixels_image=None, contains=False, tol=2.0, min_iou=0.9):
    """
    Assert that the rectangle's box, polygon mask and bitmask after ``tfms`` match its pixels.

    Args:
        tfms (Transform): applied to ``image`` and to the annotations.
        image (ndarray): the drawn image.
        box (tuple[int]): the drawn rectangle.
        pixels_image (ndarray): the transformed image the rectangle's pixels are read from
            (default: ``tfms.apply_image(image)``).
        contains (bool): the box must contain the pixels' box (rotations, shears) rather than
            equal it.
        tol (float): pixels of tolerance on the box.
        min_iou (float): the least IoU of each mask with the pixels.

    Returns:
        int: the number of rectangle pixels in the transformed image.
    """
    out = tfms.apply_image(image) if pixels_image is None else pixels_image
    pixels = rectangle_pixels(out)
    h, w = out.shape[:2]
    poly_inst, bit_inst = transform_annotations(tfms, box, image.shape, out.shape)
    gt_box = poly_inst.gt_boxes.tensor[0].numpy()
    np.testing.assert_allclose(bit_inst.gt_boxes.tensor[0].numpy(), gt_box)
    polys = poly_inst.gt_masks.polygons[0]
    poly_mask = polygons_to_bitmask(polys, h, w) if polys else np.zeros((h, w), bool)
    bit_mask = bit_inst.gt_masks.tensor[0].numpy()
    for p in polys:  # polygons are clipped to the image
        assert p.min() >= -1e-6 and p[0::2].max() <= w + 1e-6 and p[1::2].max() <= h + 1e-6
    if pixels.sum() <= 2:  # the rectangle left the image: nothing else may be left of it
        assert (gt_box[2] - gt_box[0]) * (gt_box[3] - gt_box[1]) <= tol * max(h, w)
        assert poly_mask.sum() <= 2 * tol * max(h, w) and bit_mask.sum() <= 2 * tol * max(h, w)
        return int(pixels.sum())
    pbox = pixel_box(pixels)
    if contains:
        assert np.all(gt_box[:2] <= pbox[:2] + tol), (gt_box, pbox)
        assert np.all(gt_box[2:] >= pbox[2:] - tol), (gt_box, pbox)
    else:
        np.testing.assert_allclose(gt_box, pbox, atol=tol)
    assert iou(poly_mask, pixels) >= min_iou, iou(poly_mask, pixels)
    assert iou(bit_mask, pixels) >= min_iou, iou(bit_mask, pixels)
    return int(pixels.sum())
