"""Optimizers of the pretraining recipes (LARS for SlotCon, AdamW for LOCA, SGD for the rest)."""

from .build import (
    build_pretrain_optimizer,
    maybe_add_full_model_gradient_clipping,
    split_decay_groups,
)
from .lars import LARS

__all__ = [
    "LARS",
    "build_pretrain_optimizer",
    "maybe_add_full_model_gradient_clipping",
    "split_decay_groups",
]
