"""
Dataset mappers: dataset dicts -> model inputs. Importing registers the pretext mappers, one file
per method named as its folder in ``detpre/modeling`` (``moco``, ``insloc``, ``slotcon``, ``loca``,
``aligndet``), on the shared ``base.PretextMapper`` (and ``two_views.TwoViewsMapper``).
"""

from .aligndet import BoxDomainMapper
from .base import PretextMapper
from .finetune import RobustDatasetMapper
from .insloc import InsLocCompositionMapper
from .loca import LocaViewsMapper
from .moco import TwoCropsMapper
from .sem_seg import SemSegDatasetMapper
from .slotcon import SlotConViewsMapper
from .two_views import TwoViewsMapper

__all__ = [
    "BoxDomainMapper",
    "InsLocCompositionMapper",
    "LocaViewsMapper",
    "PretextMapper",
    "RobustDatasetMapper",
    "SemSegDatasetMapper",
    "SlotConViewsMapper",
    "TwoCropsMapper",
    "TwoViewsMapper",
]
