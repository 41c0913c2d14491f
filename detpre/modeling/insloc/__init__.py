"""InsLoc (Yang et al., CVPR 2021): the meta-architecture and its box jitter. Importing registers the meta-architecture."""

from .box_jitter import AnchorBoxJitter
from .insloc import InsLoc

__all__ = [
    "AnchorBoxJitter",
    "InsLoc",
]
