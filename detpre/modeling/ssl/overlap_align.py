"""
Alignment of two views' dense maps on the region of the image both views show (SlotCon's
"inverse augmentation"): the intersection of the two crops, located in each view's pixels with
its flip, RoIAligned from each view's map, and the flip undone, so that cell (i, j) of both
aligned maps looks at the same place of the original image.
"""

import torch
from detectron2.layers import ROIAlign

__all__ = ["align_to_overlap", "overlap_boxes"]


def overlap_boxes(crop_boxes, other_crop_boxes, view_sizes, flipped):
    """
    Where the intersection of two crops lies in the first crop's view.

    Args:
        crop_boxes (Tensor): (N, 4) XYXY crop of each view, in original-image pixels.
        other_crop_boxes (Tensor): (N, 4) XYXY crop of the other view of the same image.
        view_sizes (Tensor): (N, 2) (height, width) of each view: its crop was resized to it.
        flipped (Tensor): (N,) bool, whether each view was flipped horizontally after resizing.

    Returns:
        tuple[Tensor, Tensor]: (N, 4) XYXY intersection in each view's pixels (mirrored where the
        view is flipped; the whole view where the crops do not intersect), and (N,) bool, whether
        the crops intersect with a positive area.
    """
    crop = crop_boxes.float()
    other = other_crop_boxes.float()
    x0 = torch.maximum(crop[:, 0], other[:, 0])
    y0 = torch.maximum(crop[:, 1], other[:, 1])
    x1 = torch.minimum(crop[:, 2], other[:, 2])
    y1 = torch.minimum(crop[:, 3], other[:, 3])
    nonempty = (x1 > x0) & (y1 > y0)
    h, w = view_sizes[:, 0].float(), view_sizes[:, 1].float()
    sx = w / (crop[:, 2] - crop[:, 0])
    sy = h / (crop[:, 3] - crop[:, 1])
    bx0, bx1 = (x0 - crop[:, 0]) * sx, (x1 - crop[:, 0]) * sx
    by0, by1 = (y0 - crop[:, 1]) * sy, (y1 - crop[:, 1]) * sy
    flip = flipped.to(torch.bool)
    bx0, bx1 = torch.where(flip, w - bx1, bx0), torch.where(flip, w - bx0, bx1)
    boxes = torch.stack([bx0, by0, bx1, by1], dim=1)
    whole = torch.stack([torch.zeros_like(w), torch.zeros_like(h), w, h], dim=1)
    return torch.where(nonempty[:, None], boxes, whole), nonempty


def align_to_overlap(maps, boxes, flipped, spatial_scale, output_size=None):
    """
    RoIAlign (``aligned=True``, adaptive sampling) of each map over its box, then the horizontal
    flip of its view undone.

    Args:
        maps (Tensor): (N, C, H, W) dense maps of N views (e.g. pixel-prototype logits).
        boxes (Tensor): (N, 4) XYXY region of each view, in its pixels (from
            :func:`overlap_boxes`).
        flipped (Tensor): (N,) bool, whether each view was flipped.
        spatial_scale (float or tuple[float, float]): map cells per view pixel: one number, or
            (y, x) per axis, e.g. (map H / view H, map W / view W), as SlotCon's release maps its
            normalised boxes (a 112 px view gives a 4 x 4 res5 map: 4 / 112 per pixel, not 1 / 32).
        output_size (tuple[int, int] or None): (h, w) of the aligned maps; (H, W) when None.

    Returns:
        Tensor: (N, C, h, w) float32, in the original image's orientation.
    """
    if maps.dim() != 4 or boxes.shape != (maps.shape[0], 4):
        raise ValueError(
            f"align_to_overlap needs (N, C, H, W) maps and (N, 4) boxes, got "
            f"{tuple(maps.shape)} and {tuple(boxes.shape)}"
        )
    size = tuple(maps.shape[-2:]) if output_size is None else tuple(output_size)
    # In float32: box coordinates in half precision are off by up to a pixel at 224.
    maps = maps.float()
    sy, sx = (
        (spatial_scale, spatial_scale) if isinstance(spatial_scale, (int, float)) else spatial_scale
    )
    scale = torch.tensor([sx, sy, sx, sy], device=maps.device, dtype=torch.float32)
    index = torch.arange(maps.shape[0], device=maps.device, dtype=torch.float32)[:, None]
    rois = torch.cat([index, boxes.to(device=maps.device, dtype=torch.float32) * scale], dim=1)
    aligned = ROIAlign(size, 1.0, sampling_ratio=0, aligned=True)(maps, rois)
    flip = flipped.to(device=maps.device, dtype=torch.bool)[:, None, None, None]
    return torch.where(flip, aligned.flip(-1), aligned)
