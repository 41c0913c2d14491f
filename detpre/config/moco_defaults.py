"""
Config node of MoCo-v2 (``MOCO``).

Every number the paper fixes is a key here, with the paper's value as the default.
"""

from detectron2.config import CfgNode as CN


def add_moco_config(cfg):
    """MoCo-v2: Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020."""
    _C = cfg
    _C.MOCO = CN()
    # Side of each square random-resized crop.
    _C.MOCO.CROP_SIZE = 224
    # Area range of each random-resized crop.
    _C.MOCO.CROP_SCALE = (0.2, 1.0)
    # Aspect-ratio range of each crop (sampled log-uniformly).
    _C.MOCO.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
