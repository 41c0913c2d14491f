"""
Sinkhorn-Knopp balancing of soft cluster assignments (Cuturi, NeurIPS 2013; as used by SwAV and
LOCA to keep the teacher's patch assignments from collapsing onto a few prototypes).
"""

import torch
import torch.distributed as dist
from detectron2.utils import comm

from ..ssl.precision import float32_outside_autocast

__all__ = ["sinkhorn_knopp"]


@float32_outside_autocast
@torch.no_grad()
def sinkhorn_knopp(assignments, num_iters=3, distributed=True):
    """
    Alternately rescale the prototype columns to equal total mass and the sample rows to sum to 1,
    ``num_iters`` times, in the order of the LOCA release (columns first, rows last). With
    ``distributed`` the column sums are taken over the samples of every rank (all-reduced), so
    the prototypes are balanced over the global batch.

    After the last iteration every row sums to 1 exactly; the column sums approach ``N / K``
    (N samples over all ranks, K prototypes) as iterations are added.

    Args:
        assignments (Tensor): (N, K) non-negative scores, e.g. ``softmax(logits / T)``; rows
            with positive mass.
        num_iters (int): iterations, >= 1.
        distributed (bool): all-reduce the column sums across ranks.

    Returns:
        Tensor: (N, K) float32 balanced assignments (a new tensor; no gradient).
    """
    if assignments.dim() != 2:
        raise ValueError(f"assignments must be (N, K), got {tuple(assignments.shape)}")
    if num_iters < 1:
        raise ValueError(f"Sinkhorn-Knopp needs at least one iteration, got {num_iters}")
    q = assignments.detach().float().clone()
    reduce = distributed and comm.get_world_size() > 1
    for _ in range(num_iters):
        col = q.sum(dim=0, keepdim=True)
        if reduce:
            dist.all_reduce(col)
        q /= col
        q /= q.sum(dim=1, keepdim=True)
    return q
