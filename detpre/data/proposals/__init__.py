"""Unsupervised box proposals (selective search) as one-category COCO jsons; see .generate."""

from .filters import PRESETS, filter_proposals, proposal_keep_mask
from .generate import generate_proposals, propose_image, search_args, stable_image_id
from .search import BACKENDS, opencv_selective_search, soco_selective_search

__all__ = [
    "BACKENDS",
    "PRESETS",
    "filter_proposals",
    "generate_proposals",
    "opencv_selective_search",
    "propose_image",
    "proposal_keep_mask",
    "search_args",
    "soco_selective_search",
    "stable_image_id",
]
