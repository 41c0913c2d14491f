"""SlotCon (Wen et al., NeurIPS 2022): the meta-architecture, its heads and its losses. Importing registers the meta-architecture."""

from .centering import Centering
from .conv_mlp import ConvMLP
from .semantic_grouping import SemanticGrouping
from .slotcon import SlotCon

__all__ = [
    "Centering",
    "ConvMLP",
    "SemanticGrouping",
    "SlotCon",
]
