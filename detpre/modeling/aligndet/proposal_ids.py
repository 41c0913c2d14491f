"""
Proposal ids for box-domain pretraining (AlignDet, Li et al., ICCV 2023): ids unique within a
batch, and RoIs (RPN proposals plus the proposal boxes) matched to the id of the proposal they
overlap, through Detectron2's ``Matcher`` and ``pairwise_iou``.
"""

from typing import List

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou

__all__ = ["batch_unique_ids", "match_rois_to_ids"]


def batch_unique_ids(targets: List[Instances]):
    """
    Offset each image's ``gt_ids`` (0..N_i-1 within the image) by the number of proposals of the
    images before it, so one id names one proposal of one image in the batch; the two views of a
    batch hold the same images in the same order and so get the same ids.

    Args:
        targets (list[Instances]): per image, ``gt_boxes`` (N_i, 4) and ``gt_ids`` (N_i,).

    Returns:
        list[Instances]: new Instances with ``gt_ids`` offset.
    """
    out, offset = [], 0
    for t in targets:
        ids = t.gt_ids
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(t)):
            raise ValueError(
                f"gt_ids must lie in [0, {len(t)}) within an image, got {ids.tolist()}"
            )
        t = Instances(t.image_size, **t.get_fields())
        t.gt_ids = ids + offset
        offset += len(t)
        out.append(t)
    return out


@torch.no_grad()
def match_rois_to_ids(
    proposals: List[Instances], targets: List[Instances], iou_threshold=0.5, max_per_image=4096
):
    """
    Args:
        proposals (list[Instances]): per image, RPN proposals with ``proposal_boxes`` (R_i, 4).
        targets (list[Instances]): per image, ``gt_boxes`` (N_i, 4) and ``gt_ids`` (N_i,).
        iou_threshold (float): a RoI takes the id of its highest-IoU proposal box when that IoU
            is at least this; other RoIs are dropped (only matched RoIs are sampled).
        max_per_image (int): at most this many matched RoIs per image, drawn at random.

    Returns:
        list[Instances]: per image, the RoIs (the proposal boxes first, as Detectron2's
        ``add_ground_truth_to_proposals`` adds them, then matched RPN proposals) with
        ``proposal_boxes``, ``gt_boxes`` (the matched proposal box) and ``gt_ids``.
    """
    matcher = Matcher([iou_threshold], [0, 1], allow_low_quality_matches=False)
    out = []
    for props, tgt in zip(proposals, targets):
        boxes = Boxes.cat([tgt.gt_boxes, Boxes(props.proposal_boxes.tensor.detach())])
        if len(tgt) == 0:
            keep = torch.zeros(0, dtype=torch.long, device=boxes.device)
            matched = keep
        else:
            matched, labels = matcher(pairwise_iou(tgt.gt_boxes, boxes))
            keep = torch.nonzero(labels == 1).squeeze(1)
        if keep.numel() > max_per_image:
            keep = keep[torch.randperm(keep.numel(), device=keep.device)[:max_per_image]]
        rois = Instances(tgt.image_size)
        rois.proposal_boxes = boxes[keep]
        rois.gt_boxes = tgt.gt_boxes[matched[keep]]
        rois.gt_ids = tgt.gt_ids[matched[keep]]
        out.append(rois)
    return out
