"""The per-pixel cross-entropy of the segmentation heads."""

import torch
from torch.nn import functional as F

__all__ = ["sem_seg_cross_entropy"]


def sem_seg_cross_entropy(logits, targets, *, ignore_value, avg_non_ignore, align_corners=False):
    """
    Cross-entropy of logits upsampled (bilinear) to the label size, as mmseg's decode heads
    compute it.

    Args:
        logits (Tensor): (N, K, h, w) class scores at the head's stride.
        targets (Tensor): (N, H, W) int64 labels in [0, K) or ``ignore_value``.
        ignore_value (int): the label of pixels without a class.
        avg_non_ignore (bool): average over labelled pixels (Detectron2's SemSegFPNHead,
            Segmenter) or over every pixel of the batch, ignored ones counting 0 (mmseg's
            default, ``avg_non_ignore=False``).
        align_corners (bool): of the bilinear upsampling (mmseg's FCN-D16 "moco" heads: True).

    Returns:
        Tensor: the scalar loss.
    """
    logits = F.interpolate(
        logits.float(), size=targets.shape[-2:], mode="bilinear", align_corners=align_corners
    )
    if avg_non_ignore:
        return F.cross_entropy(logits, targets, reduction="mean", ignore_index=ignore_value)
    loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=ignore_value)
    return loss / max(targets.numel(), 1)


def check_targets(targets):
    """Raise when a batch has no labels in training (a mapper bug, not a data problem)."""
    if targets is None or not torch.is_tensor(targets):
        raise ValueError("A segmentation head in training needs the batch's 'sem_seg' labels")
