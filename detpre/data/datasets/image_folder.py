"""
Unlabeled image folders (ImageNet-style class folders or flat), for label-free pretraining.

The dicts hold ``file_name`` and ``image_id`` and no ``annotations``. Image sizes are not read at
load time (a header read per file takes minutes on ImageNet-1k, in every process): they are read
when the image is decoded; :class:`detpre.data.mappers.RobustDatasetMapper` fills ``height`` and
``width`` from the file header when a dict lacks them.
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "register_image_folder"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_image_folder(folder):
    """
    List the images under a folder, recursively, in sorted order. Hidden files (names starting
    with ".") and files whose extension is not in ``IMAGE_EXTENSIONS`` (any case) are ignored.

    Args:
        folder (str): a local folder.

    Returns:
        list[dict]: one dict per image: ``file_name`` (path) and ``image_id`` (the path relative to
        ``folder``, "/"-separated), no ``annotations``.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder {folder} does not exist")
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(
            os.path.join(root, n)
            for n in sorted(names)
            if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
        )
    if not files:
        raise FileNotFoundError(
            f"Image folder {folder} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    logger.info(f"Found {len(files)} images in {folder}.")
    return [
        {"file_name": f, "image_id": os.path.relpath(f, folder).replace(os.sep, "/")} for f in files
    ]


def register_image_folder(name, folder):
    """
    Register an unlabeled image folder. Its metadata has ``image_root`` and
    ``evaluator_type="unlabeled"`` (no detection evaluator applies).

    Args:
        name (str): the dataset name.
        folder (str): the folder, searched recursively when the dataset is loaded.
    """
    DatasetCatalog.register(name, lambda: load_image_folder(folder))
    MetadataCatalog.get(name).set(image_root=folder, evaluator_type="unlabeled")
