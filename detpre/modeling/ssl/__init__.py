"""Machinery shared by the self-supervised pretraining methods (momentum copies, queues, losses)."""

from .box_contrast import box_id_contrast
from .box_jitter import AnchorBoxJitter
from .heads import MLPProjection
from .losses import info_nce
from .momentum import MomentumCopy, build_momentum_copy, cosine_momentum, momentum_update
from .proposal_ids import batch_unique_ids, match_rois_to_ids
from .queue import FeatureQueue, QueueBank
from .shuffle_bn import batch_shuffle, batch_unshuffle, concat_all_gather

__all__ = [
    "AnchorBoxJitter",
    "FeatureQueue",
    "MLPProjection",
    "MomentumCopy",
    "QueueBank",
    "batch_shuffle",
    "batch_unique_ids",
    "batch_unshuffle",
    "box_id_contrast",
    "build_momentum_copy",
    "concat_all_gather",
    "cosine_momentum",
    "info_nce",
    "match_rois_to_ids",
    "momentum_update",
]
