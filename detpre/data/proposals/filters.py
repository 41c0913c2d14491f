"""
The filters of the proposal generator: SoCo's size / shape / area filter (``filter_ratio_size``
in hologerry/SoCo ``selective_search/filters.py``), then an optional NMS and top-k, and the
presets of the two papers' released proposal files.
"""

import torch
from detectron2.layers import nms

__all__ = ["PRESETS", "filter_proposals", "proposal_keep_mask"]

# Backend and filtering of the two papers' proposal files:
# * soco: SoCo's ``ratio3size0308`` (w, h >= 32; 1/3 <= w/h <= 3; sqrt(box / image area) in
#   [0.3, 0.8]) on its generator;
# * aligndet: the ``ratio3size0008`` of AlignDet's ``train2017_ratio3size0008@0.5.json`` (area
#   range [0, 0.8]) on the same generator. What "@0.5" denotes is stated nowhere in either release
#   (no script of theirs makes that file); reading it as NMS at 0.5 is an option
#   (``nms_thresh=0.5``), unconfirmed and off by default.
PRESETS = {
    "aligndet": dict(
        backend="soco", min_size=32, max_aspect_ratio=3.0, area_range=(0.0, 0.8), nms_thresh=None
    ),
    "soco": dict(
        backend="soco", min_size=32, max_aspect_ratio=3.0, area_range=(0.3, 0.8), nms_thresh=None
    ),
}


def proposal_keep_mask(boxes, image_size, *, min_size=32, max_aspect_ratio=3.0, area_range=(0, 1)):
    """
    The size, shape and area filters of SoCo's ``filter_ratio_size``.

    Args:
        boxes (Tensor): (N, 4) XYXY boxes.
        image_size (tuple[int, int]): (height, width) of their image.
        min_size (float): smallest width and height kept.
        max_aspect_ratio (float or None): largest max(w/h, h/w) kept; None keeps any.
        area_range (tuple[float, float]): (lo, hi) of sqrt(box area / image area), bounds kept.

    Returns:
        Tensor: (N,) bool, True for the boxes kept.
    """
    wh = (boxes[:, 2:] - boxes[:, :2]).double()
    keep = (wh >= min_size).all(dim=1)
    if max_aspect_ratio is not None:
        ratio = wh.max(dim=1).values / wh.min(dim=1).values  # inf / nan for empty boxes: dropped
        keep &= ratio <= max_aspect_ratio
    rel_side = (wh.prod(dim=1) / (image_size[0] * image_size[1])).sqrt()
    return keep & (rel_side >= area_range[0]) & (rel_side <= area_range[1])


def filter_proposals(
    boxes,
    image_size,
    *,
    min_size=32,
    max_aspect_ratio=3.0,
    area_range=(0.0, 1.0),
    nms_thresh=None,
    topk=None,
):
    """
    Filter ranked proposals: :func:`proposal_keep_mask`, then NMS with the rank as the score (of
    two boxes with IoU > ``nms_thresh`` the earlier one stays), then the first ``topk``.

    Args:
        boxes (Tensor): (N, 4) XYXY boxes, best ranked first.
        image_size (tuple[int, int]): (height, width).
        min_size, max_aspect_ratio, area_range: see :func:`proposal_keep_mask`.
        nms_thresh (float or None): NMS IoU threshold; None skips NMS.
        topk (int or None): boxes kept at most; None keeps all.

    Returns:
        Tensor: (K,) int64 indices into ``boxes`` of the boxes kept, in rank order.
    """
    mask = proposal_keep_mask(
        boxes,
        image_size,
        min_size=min_size,
        max_aspect_ratio=max_aspect_ratio,
        area_range=area_range,
    )
    keep = mask.nonzero().flatten()
    if nms_thresh is not None and len(keep):
        rank_scores = torch.arange(len(keep), 0, -1, dtype=torch.float32)
        # nms returns indices by decreasing score, i.e. in rank order.
        keep = keep[nms(boxes[keep].float(), rank_scores, nms_thresh)]
    return keep[:topk] if topk is not None else keep
