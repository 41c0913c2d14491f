"""Dataset mappers: dataset dicts -> model inputs. Importing registers the pretext mappers."""

from .base import PretextMapper
from .box_domain import BoxDomainMapper
from .finetune import RobustDatasetMapper
from .insloc_composition import InsLocCompositionMapper
from .loca_views import LocaViewsMapper
from .slotcon_views import SlotConViewsMapper
from .two_views import TwoCropsMapper, TwoViewsMapper

__all__ = [
    "BoxDomainMapper",
    "InsLocCompositionMapper",
    "LocaViewsMapper",
    "PretextMapper",
    "RobustDatasetMapper",
    "SlotConViewsMapper",
    "TwoCropsMapper",
    "TwoViewsMapper",
]
