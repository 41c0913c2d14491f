"""MoCo-v2 (Chen et al., 2020) on a detector trunk; the momentum contrast it shares with InsLoc is
``meta_arch/momentum_contrast.py``. Importing registers the meta-architecture."""

from .moco import MoCoV2

__all__ = [
    "MoCoV2",
]
