"""
Alignment of two views' dense maps on the region of the image both views show (SlotCon's
"inverse augmentation"): the intersection of the two crops, located in each view as a fraction of
its sides with its flip, RoIAligned from each view's map, and the flip undone, so that cell
(i, j) of both aligned maps looks at the same place of the original image.
"""

import torch
from detectron2.layers import ROIAlign

__all__ = ["align_to_overlap", "overlap_boxes"]


def overlap_boxes(crop_boxes, other_crop_boxes, flipped):
    """
    Where the intersection of two crops lies in the first crop's view, as a fraction of the
    view's sides (a view shows its whole crop, whatever size it was resized to). As SlotCon's
    release (``data/transforms.py``: ``_clip_coords``, then ``CustomRandomHorizontalFlip``): the
    fractions in float64 stored as float32, then mirrored as ``1 - x`` in float32, so that an
    intersection reaching a crop's border is exactly 0 or 1 and maps to a whole number of cells.

    Args:
        crop_boxes (Tensor): (N, 4) XYXY crop of each view, in original-image pixels.
        other_crop_boxes (Tensor): (N, 4) XYXY crop of the other view of the same image.
        flipped (Tensor): (N,) bool, whether each view was flipped horizontally after resizing.

    Returns:
        tuple[Tensor, Tensor]: (N, 4) float32 XYXY intersection in each view, in [0, 1]
        (mirrored where the view is flipped; the whole view, (0, 0, 1, 1), where the crops do not
        intersect), and (N,) bool, whether the crops intersect with a positive area.
    """
    crop = crop_boxes.double()
    other = other_crop_boxes.to(crop)
    lo = torch.maximum(crop[:, :2], other[:, :2])
    hi = torch.minimum(crop[:, 2:], other[:, 2:])
    nonempty = (hi > lo).all(dim=1)
    size = crop[:, 2:] - crop[:, :2]
    boxes = torch.cat([(lo - crop[:, :2]) / size, (hi - crop[:, :2]) / size], dim=1).float()
    flip = flipped.to(device=boxes.device, dtype=torch.bool)
    x0 = torch.where(flip, 1.0 - boxes[:, 2], boxes[:, 0])
    x1 = torch.where(flip, 1.0 - boxes[:, 0], boxes[:, 2])
    boxes = torch.stack([x0, boxes[:, 1], x1, boxes[:, 3]], dim=1)
    whole = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device).expand_as(boxes)
    return torch.where(nonempty[:, None], boxes, whole), nonempty


def align_to_overlap(maps, boxes, flipped, output_size=None):
    """
    RoIAlign (``aligned=True``, adaptive sampling) of each map over its box, scaled by the map's
    size as the release's ``invaug`` does (so a 112 px view's 4 x 4 res5 map is sampled at
    4 / 112 cells per pixel, not at a nominal 1 / 32), then the horizontal flip of its view undone.

    Args:
        maps (Tensor): (N, C, H, W) dense maps of N views (e.g. pixel-prototype logits).
        boxes (Tensor): (N, 4) XYXY region of each view as fractions of its sides (from
            :func:`overlap_boxes`).
        flipped (Tensor): (N,) bool, whether each view was flipped.
        output_size (tuple[int, int] or None): (h, w) of the aligned maps; (H, W) when None.

    Returns:
        Tensor: (N, C, h, w) float32, in the original image's orientation.
    """
    if maps.dim() != 4 or boxes.shape != (maps.shape[0], 4):
        raise ValueError(
            f"align_to_overlap needs (N, C, H, W) maps and (N, 4) boxes, got "
            f"{tuple(maps.shape)} and {tuple(boxes.shape)}"
        )
    height, width = maps.shape[-2:]
    size = (height, width) if output_size is None else tuple(output_size)
    # In float32: box coordinates in half precision are off by up to a pixel at 224.
    maps = maps.float()
    scale = torch.tensor([width, height, width, height], device=maps.device, dtype=torch.float32)
    index = torch.arange(maps.shape[0], device=maps.device, dtype=torch.float32)[:, None]
    rois = torch.cat([index, boxes.to(device=maps.device, dtype=torch.float32) * scale], dim=1)
    aligned = ROIAlign(size, 1.0, sampling_ratio=0, aligned=True)(maps, rois)
    flip = flipped.to(device=maps.device, dtype=torch.bool)[:, None, None, None]
    return torch.where(flip, aligned.flip(-1), aligned)
