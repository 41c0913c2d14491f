"""
Machinery shared by several pretraining methods: momentum copies, queues, shuffle-BN, InfoNCE,
the MLP projection head, metrics and precision guards. What one method alone uses lives in its
folder (``detpre/modeling/<method>/``).
"""

from .heads import MLPProjection
from .losses import info_nce
from .momentum import MomentumCopy, build_momentum_copy, cosine_momentum, momentum_update
from .queue import FeatureQueue, QueueBank
from .shuffle_bn import batch_shuffle, batch_unshuffle, concat_all_gather

__all__ = [
    "FeatureQueue",
    "MLPProjection",
    "MomentumCopy",
    "QueueBank",
    "batch_shuffle",
    "batch_unshuffle",
    "build_momentum_copy",
    "concat_all_gather",
    "cosine_momentum",
    "info_nce",
    "momentum_update",
]
