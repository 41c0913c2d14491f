"""detpre: label-free pretraining of Detectron2 detectors, carried into fine-tuning."""

# Importing the sub-packages registers datasets, meta-architectures and heads with Detectron2.
from . import data  # noqa: F401  isort:skip
from . import modeling  # noqa: F401  isort:skip
from .config import add_detpre_config  # noqa: F401

__version__ = "0.1.0"
