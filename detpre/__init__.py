"""detpre: label-free pretraining of Detectron2 detectors, carried into fine-tuning."""

import importlib.util

if importlib.util.find_spec("cv2") is None:  # not among the package's requirements (setup.py)
    raise ImportError(
        "detpre needs OpenCV (cv2), which its install leaves to you so that no second OpenCV wheel "
        "lands beside yours: pip install opencv-python-headless (or opencv-contrib-python-headless "
        "for tools/prepare_proposals.py --backend opencv)"
    )

# Importing the sub-packages registers datasets, meta-architectures and heads with Detectron2.
from . import data  # noqa: F401  isort:skip
from . import modeling  # noqa: F401  isort:skip
from .config import add_detpre_config  # noqa: F401

__version__ = "0.1.0"
