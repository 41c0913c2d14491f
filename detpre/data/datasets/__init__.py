"""Dataset loaders and registrations; importing this package registers the predefined names."""

from . import builtin  # noqa: F401  registers the predefined datasets  isort:skip
from .builtin import BCCD_CLASSES, register_all_detpre
from .image_folder import load_image_folder, register_image_folder
from .proposal_sets import proposals_json_path, register_proposal_set
from .register import register_from_config, resolve_dataset_path
from .sem_seg import (
    COCO_SEM_SEG_CLASSES,
    VOC_SEM_SEG_CLASSES,
    load_sem_seg_dataset,
    register_all_sem_seg,
    register_sem_seg,
    sem_seg_label_root,
)
from .voc import load_voc_instances, register_voc, voc_class_names

__all__ = [
    "BCCD_CLASSES",
    "COCO_SEM_SEG_CLASSES",
    "VOC_SEM_SEG_CLASSES",
    "load_image_folder",
    "load_sem_seg_dataset",
    "load_voc_instances",
    "proposals_json_path",
    "register_all_detpre",
    "register_all_sem_seg",
    "register_from_config",
    "register_image_folder",
    "register_proposal_set",
    "register_sem_seg",
    "register_voc",
    "resolve_dataset_path",
    "sem_seg_label_root",
    "voc_class_names",
]
