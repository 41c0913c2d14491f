"""
Datasets registered on ``import detpre``, rooted at ``$DETECTRON2_DATASETS`` (default
``./datasets``) as Detectron2's own builtin datasets are. The layouts are in ``datasets/README.md``.

Detectron2's builtin names (``coco_2017_train``, ``voc_2007_test``, ...) are registered by
``import detectron2.data`` and left untouched.
"""

import os

from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .image_folder import register_image_folder
from .proposal_sets import register_all_proposal_sets
from .sem_seg import register_all_sem_seg
from .voc import register_voc

__all__ = ["BCCD_CLASSES", "register_all_detpre"]

# The bundled sample data: (image_root, json_file), official COCO 2017 category ids.
_PREDEFINED_COCO = {
    "coco_tiny_train": ("coco_tiny/train2017", "coco_tiny/annotations/instances_train2017.json"),
    "coco_tiny_val": ("coco_tiny/val2017", "coco_tiny/annotations/instances_val2017.json"),
    "coco128_train": ("coco128/train2017", "coco128/annotations/instances_train2017.json"),
}

BCCD_CLASSES = ("RBC", "WBC", "Platelets")
# (dirname, split, year, class names)
_PREDEFINED_VOC = {
    f"bccd_voc_{split}": ("bccd_voc/VOC2007", split, 2007, BCCD_CLASSES)
    for split in ("train", "val", "trainval", "test")
}

# Unlabeled image folders: the bundled object-centric sample, and the full-size sets the
# pretraining configs name (labels, where the layout has them, are ignored).
_PREDEFINED_IMAGE_FOLDERS = {
    "imagenet_sample_unlabeled": "imagenet_sample/images",
    "imagenet_train": "imagenet/train",
    "coco_2017_unlabeled": "coco/unlabeled2017",
}


def register_all_detpre(root):
    """
    Register detpre's predefined datasets under ``root``. Nothing is read until a dataset is
    loaded, so a missing folder fails only when its name is used.

    Args:
        root (str): the datasets root, normally ``$DETECTRON2_DATASETS``.
    """
    for name, (image_root, json_file) in _PREDEFINED_COCO.items():
        register_coco_instances(
            name,
            _get_builtin_metadata("coco"),
            os.path.join(root, json_file),
            os.path.join(root, image_root),
        )
    for name, (dirname, split, year, class_names) in _PREDEFINED_VOC.items():
        register_voc(name, os.path.join(root, dirname), split, year, class_names)
    for name, folder in _PREDEFINED_IMAGE_FOLDERS.items():
        register_image_folder(name, os.path.join(root, folder))
    register_all_proposal_sets(root)
    register_all_sem_seg(root)


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_detpre(_root)
