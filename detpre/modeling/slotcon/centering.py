"""The centre subtracted from a teacher's logits (DINO's centering), averaged over all ranks."""

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn

from ..ssl.precision import float32_outside_autocast

__all__ = ["Centering"]


class Centering(nn.Module):
    """
    Centering of the teacher's outputs (Caron et al., "Emerging Properties in Self-Supervised
    Vision Transformers", ICCV 2021), as SlotCon uses it on its pixel-prototype logits: a buffer
    ``center`` (K,), moved after each step by ``c <- m c + (1 - m) mean(logits)``, the mean taken
    over every row of every rank.
    """

    def __init__(self, dim, momentum=0.9):
        """
        Args:
            dim (int): K, the width of the logits.
            momentum (float): m in [0, 1].
        """
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SLOTCON.CENTER_MOMENTUM must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))

    @float32_outside_autocast
    @torch.no_grad()
    def update(self, logits):
        """
        Args:
            logits (Tensor): (M, K) teacher logits of this rank (M may differ between ranks).
        """
        if logits.dim() != 2 or logits.shape[1] != self.center.numel():
            raise ValueError(
                f"Centering expects (M, {self.center.numel()}) logits, got {tuple(logits.shape)}"
            )
        stats = torch.cat([logits.float().sum(dim=0), logits.new_tensor([logits.shape[0]]).float()])
        if comm.get_world_size() > 1:
            dist.all_reduce(stats)
        batch_center = stats[:-1] / stats[-1].clamp(min=1.0)
        self.center.mul_(self.momentum).add_(batch_center, alpha=1.0 - self.momentum)
