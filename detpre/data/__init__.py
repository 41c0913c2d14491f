"""Data: dataset registration (on import), robust image reading, mappers."""

from . import datasets  # noqa: F401  registers detpre's datasets  isort:skip
from .datasets import register_from_config
from .image_io import CorruptImageError, read_image, read_image_size
from .mappers import RobustDatasetMapper

__all__ = [
    "CorruptImageError",
    "RobustDatasetMapper",
    "read_image",
    "read_image_size",
    "register_from_config",
]
