"""LOCA (Caron et al., 2022): the meta-architecture, its heads, targets and losses. Importing registers the meta-architecture."""

from .loca import LOCA
from .loca_head import LocaHead
from .prototype_head import PrototypeHead

__all__ = [
    "LOCA",
    "LocaHead",
    "PrototypeHead",
]
