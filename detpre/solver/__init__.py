"""Optimizers of the pretraining recipes (LARS for SlotCon, AdamW for LOCA, SGD for the rest) and
the poly schedule of segmentation transfer."""

from .build import (
    build_pretrain_optimizer,
    maybe_add_full_model_gradient_clipping,
    split_decay_groups,
)
from .lars import LARS
from .poly_lr import WarmupPolyLRWithFloor, build_poly_lr_scheduler

__all__ = [
    "LARS",
    "WarmupPolyLRWithFloor",
    "build_poly_lr_scheduler",
    "build_pretrain_optimizer",
    "maybe_add_full_model_gradient_clipping",
    "split_decay_groups",
]
