"""Dataset loaders and registrations; importing this package registers the predefined names."""

from . import builtin  # noqa: F401  registers the predefined datasets  isort:skip
from .builtin import BCCD_CLASSES, register_all_detpre
from .image_folder import load_image_folder, register_image_folder
from .proposal_sets import proposals_json_path, register_proposal_set
from .register import register_from_config, resolve_dataset_path
from .voc import load_voc_instances, register_voc, voc_class_names

__all__ = [
    "BCCD_CLASSES",
    "load_image_folder",
    "load_voc_instances",
    "proposals_json_path",
    "register_all_detpre",
    "register_from_config",
    "register_image_folder",
    "register_proposal_set",
    "register_voc",
    "resolve_dataset_path",
    "voc_class_names",
]
