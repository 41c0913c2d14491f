"""
Negative queues of momentum contrast: a ring buffer of K L2-normalised keys, and one queue per
feature level.
"""

from typing import Dict, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .precision import float32_outside_autocast

__all__ = ["FeatureQueue", "QueueBank"]


class FeatureQueue(nn.Module):
    """
    A first-in first-out bank of ``size`` L2-normalised ``dim``-d vectors (MoCo's dictionary).
    The state dict holds ``queue`` (size, dim) and ``ptr`` (the next row written), so a resumed
    run continues with the same negatives.
    """

    def __init__(self, size, dim):
        """
        Args:
            size (int): K, the number of vectors kept.
            dim (int): their dimension.
        """
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self):
        return self.queue.shape[0]

    @float32_outside_autocast
    @torch.no_grad()
    def enqueue(self, keys):
        """
        Write a batch of keys over the oldest entries, wrapping around the end of the buffer
        (the tail is written, then the head); with more keys than K only the last K are kept,
        where a one-at-a-time ring buffer would have left them.

        Args:
            keys (Tensor): (B, dim), normalised again here.
        """
        if keys.dim() != 2 or keys.shape[1] != self.queue.shape[1]:
            raise ValueError(
                f"keys must be (B, {self.queue.shape[1]}), got {tuple(keys.shape)} for the queue"
            )
        keys = F.normalize(keys.detach(), dim=1).to(self.queue.dtype)
        size, num = self.size, keys.shape[0]
        ptr = int(self.ptr)
        if num >= size:
            ptr = (ptr + num - size) % size
            keys, num = keys[num - size :], size
        first = min(num, size - ptr)
        self.queue[ptr : ptr + first] = keys[:first]
        self.queue[: num - first] = keys[first:]
        self.ptr.fill_((ptr + num) % size)

    def extra_repr(self):
        return f"size={self.queue.shape[0]}, dim={self.queue.shape[1]}"


class QueueBank(nn.ModuleDict):
    """
    Independent queues, one per feature level, keyed by level name (state dict keys
    ``<level>.queue`` and ``<level>.ptr``).
    """

    def __init__(self, levels: Iterable[str], size, dim):
        """
        Args:
            levels (iterable[str]): the level names, e.g. ("p2", "p3", "p4", "p5").
            size (int): K of every queue.
            dim (int): embedding dimension.
        """
        super().__init__({level: FeatureQueue(size, dim) for level in levels})

    @torch.no_grad()
    def enqueue(self, keys: Dict[str, torch.Tensor]):
        """
        Args:
            keys (dict[str, Tensor]): level -> (B, dim) keys; every level of the bank is required.
        """
        if set(keys) != set(self.keys()):
            raise KeyError(
                f"keys for levels {sorted(keys)} but the queues are {sorted(self.keys())}"
            )
        for level, k in keys.items():
            self[level].enqueue(k)
