"""The InfoNCE loss of momentum contrast (Oord et al., 2018; He et al., CVPR 2020)."""

import torch
import torch.nn.functional as F

from .precision import float32_outside_autocast

__all__ = ["info_nce"]


@float32_outside_autocast
def info_nce(q, k, negatives, temperature):
    """
    InfoNCE with one positive per query and a shared bank of negatives: logits
    ``[q.k, q.n_1, ..., q.n_K] / T`` with the positive at index 0, cross-entropy against label 0.

    Args:
        q (Tensor): (N, D) L2-normalised queries (take the gradient).
        k (Tensor): (N, D) L2-normalised positive keys (no gradient flows into them).
        negatives (Tensor): (K, D) L2-normalised negatives, e.g. a queue (no gradient).
        temperature (float): T > 0.

    Returns:
        tuple[Tensor, Tensor]: the mean loss (scalar) and the top-1 accuracy (scalar in [0, 1]),
        the fraction of queries whose positive logit is strictly larger than every negative's.
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (N, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    if negatives.dim() != 2 or negatives.shape[1] != q.shape[1]:
        raise ValueError(f"negatives must be (K, {q.shape[1]}), got {tuple(negatives.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    l_pos = (q * k.detach()).sum(dim=1, keepdim=True)
    l_neg = q @ negatives.detach().to(q.dtype).t()
    logits = torch.cat([l_pos, l_neg], dim=1).float() / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits, labels)
    # Strictly above every negative: a collapsed encoder (all logits tied) scores 0, not the 100 %
    # an argmax that breaks ties towards index 0 would report.
    acc = (logits[:, 0] > logits[:, 1:].amax(dim=1)).float().mean().detach()
    return loss, acc
