"""
The patch-cluster losses of LOCA (Caron et al., "Location-Aware Self-Supervised Transformers for
Semantic Segmentation", 2022): soft cross-entropy against teacher assignments, and the
mean-entropy maximisation ("me-max") regulariser of MSN / LOCA.
"""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from detectron2.utils import comm

from ..ssl.precision import float32_outside_autocast

__all__ = ["masked_soft_cross_entropy", "mean_entropy_penalty"]


@float32_outside_autocast
def masked_soft_cross_entropy(logits, targets, valid):
    """
    ``sum_i valid_i * H(targets_i, softmax(logits_i)) / max(sum_i valid_i, 1)``.

    Args:
        logits (Tensor): (N, K) student logits (already divided by their temperature).
        targets (Tensor): (N, K) target distributions (no gradient flows into them).
        valid (Tensor): (N,) bool, which rows count.

    Returns:
        Tensor: scalar; 0 (with a zero gradient) when no row is valid.
    """
    if logits.shape != targets.shape or valid.shape != logits.shape[:1]:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and valid "
            f"{tuple(valid.shape)} must be (N, K), (N, K) and (N,)"
        )
    per_row = -(targets.detach() * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    weights = valid.to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp(min=1.0)


@float32_outside_autocast
def mean_entropy_penalty(logits, distributed=True):
    """
    The negative entropy of the mean prediction, ``sum_k p_k log p_k`` with
    ``p = mean_i softmax(logits_i)`` over every row of every rank; minimising it spreads the
    predictions over all prototypes.

    Args:
        logits (Tensor): (N, K) student logits (already divided by their temperature).
        distributed (bool): average ``p`` over ranks (differentiably) as well.

    Returns:
        Tensor: scalar in ``[-log K, 0]``.
    """
    mean = F.softmax(logits.float(), dim=1).mean(dim=0)
    world = comm.get_world_size()
    if distributed and world > 1 and dist.is_initialized():
        mean = dist_fn.all_reduce(mean) / world
    return (mean * torch.log(mean.clamp(min=1e-12))).sum()
