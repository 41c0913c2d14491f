"""
Datasets a user registers from the config (``DATASETS.REGISTER_COCO``, ``DATASETS.REGISTER_VOC``,
``DATASETS.REGISTER_IMAGE_FOLDER``, ``DATASETS.REGISTER_SEM_SEG``), hence from the command line,
without writing Python:

    tools/train_net.py ... DATASETS.REGISTER_COCO "[('my_train', 'my/ann.json', 'my/images')]" \
        DATASETS.TRAIN "('my_train',)"
"""

import logging
import os
import re

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .image_folder import register_image_folder
from .sem_seg import register_sem_seg
from .voc import register_voc, voc_class_names

__all__ = ["register_from_config", "resolve_dataset_path"]

logger = logging.getLogger(__name__)

_PATH_KEYS = ("json_file", "image_root", "dirname", "sem_seg_root")
# Year of a VOC folder when its path does not say (VOC2007 -> 2007): the area-based AP of
# VOC2010+, not the 11-point VOC07 metric.
_DEFAULT_VOC_YEAR = 2012


def resolve_dataset_path(path):
    """
    Args:
        path (str): absolute, "~"-prefixed, or relative to ``$DETECTRON2_DATASETS``.

    Returns:
        str: the path, relative ones joined to ``$DETECTRON2_DATASETS`` (default ``./datasets``).
    """
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), path)


def _same(key, a, b):
    if key in _PATH_KEYS and isinstance(a, str) and isinstance(b, str):
        return os.path.realpath(a) == os.path.realpath(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _already_registered(key, name, spec):
    """True when ``name`` is registered with ``spec``; an error when registered otherwise."""
    if name not in DatasetCatalog.list():
        return False
    meta = MetadataCatalog.get(name)
    existing = {k: meta.get(k, None) for k in spec}
    if all(_same(k, existing[k], v) for k, v in spec.items()):
        logger.info(f"{key}: dataset {name!r} is registered already with the same spec.")
        return True
    raise ValueError(
        f"{key}: dataset name {name!r} is already registered as a different dataset "
        f"({existing}, not {spec}). Choose another name."
    )


def _require(path, what, key, name, isdir):
    if not (os.path.isdir(path) if isdir else os.path.isfile(path)):
        raise FileNotFoundError(f"{key} entry {name!r}: {what} {path} does not exist")


def _register_coco(key, name, json_file, image_root):
    json_file, image_root = resolve_dataset_path(json_file), resolve_dataset_path(image_root)
    spec = {"evaluator_type": "coco", "json_file": json_file, "image_root": image_root}
    if _already_registered(key, name, spec):
        return
    _require(json_file, "json file", key, name, isdir=False)
    _require(image_root, "image folder", key, name, isdir=True)
    register_coco_instances(name, {}, json_file, image_root)


def _register_voc(key, name, dirname, split, class_names=None):
    dirname = resolve_dataset_path(dirname)
    if isinstance(class_names, str):
        class_names = [c.strip() for c in class_names.split(",") if c.strip()]
    spec = {"evaluator_type": "pascal_voc", "dirname": dirname, "split": split}
    if class_names is not None:
        spec["thing_classes"] = list(class_names)
    if _already_registered(key, name, spec):
        return
    _require(dirname, "VOC folder", key, name, isdir=True)
    split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    _require(split_file, "split file", key, name, isdir=False)
    if not class_names:
        class_names = voc_class_names(dirname)
        logger.info(f"{key}: classes of {name!r} read from {dirname}/Annotations: {class_names}")
    year = re.search(r"VOC(\d{4})", dirname)
    year = int(year.group(1)) if year else _DEFAULT_VOC_YEAR
    register_voc(name, dirname, split, year, class_names)


def _register_image_folder(key, name, folder):
    folder = resolve_dataset_path(folder)
    if _already_registered(key, name, {"evaluator_type": "unlabeled", "image_root": folder}):
        return
    _require(folder, "image folder", key, name, isdir=True)
    register_image_folder(name, folder)


def _split_names(names):
    if isinstance(names, str):
        return [c.strip() for c in names.split(",") if c.strip()]
    return list(names)


def _register_sem_seg(key, name, image_root, gt_root, class_names):
    image_root, gt_root = resolve_dataset_path(image_root), resolve_dataset_path(gt_root)
    class_names = _split_names(class_names)
    spec = {
        "evaluator_type": "sem_seg",
        "image_root": image_root,
        "sem_seg_root": gt_root,
        "stuff_classes": class_names,
    }
    if _already_registered(key, name, spec):
        return
    _require(image_root, "image folder", key, name, isdir=True)
    _require(gt_root, "label folder", key, name, isdir=True)
    register_sem_seg(name, image_root, gt_root, class_names)


# config key -> (registration function, accepted entry lengths, the entry's documented form)
_REGISTRARS = {
    "REGISTER_COCO": (_register_coco, (3,), "(name, json_file, image_root)"),
    "REGISTER_VOC": (_register_voc, (3, 4), "(name, dirname, split[, 'cls1,cls2,...'])"),
    "REGISTER_IMAGE_FOLDER": (_register_image_folder, (2,), "(name, folder)"),
    "REGISTER_SEM_SEG": (
        _register_sem_seg,
        (4,),
        "(name, image_root, label_root, 'cls0,cls1,...')",
    ),
}


def _valid_entry(entry, lengths):
    if not isinstance(entry, (list, tuple)) or len(entry) not in lengths:
        return False
    *fields, last = entry
    # The class names (VOC's optional ones, sem seg's) may be one "a,b,c" string or a list.
    if len(entry) == 4 and isinstance(last, (list, tuple)):
        fields += list(last)
    else:
        fields.append(last)
    return all(isinstance(x, str) and x for x in fields)


def register_from_config(cfg):
    """
    Register the datasets listed in ``DATASETS.REGISTER_COCO``, ``DATASETS.REGISTER_VOC``,
    ``DATASETS.REGISTER_IMAGE_FOLDER`` and ``DATASETS.REGISTER_SEM_SEG`` (formats in
    ``detpre/config/defaults.py`` and
    ``datasets/README.md``). Relative paths are taken under ``$DETECTRON2_DATASETS``. A VOC entry
    without class names gets the sorted class names found in its ``Annotations/``.

    Idempotent: a name registered already with the same spec is left as it is. A name registered as
    a different dataset (Detectron2's builtin names included) is a ValueError naming it; a missing
    json file, folder or split file is a FileNotFoundError naming the path.

    Args:
        cfg (CfgNode): a config with detpre's keys (``add_detpre_config``).

    Returns:
        list[str]: the names listed, in config order.
    """
    names = []
    for key, (register, lengths, form) in _REGISTRARS.items():
        full_key = f"DATASETS.{key}"
        for entry in cfg.DATASETS[key]:
            if not _valid_entry(entry, lengths):
                raise ValueError(
                    f"{full_key}: each entry must be {form} of non-empty strings, got {entry!r}. "
                    f"""On the command line: {full_key} "[{form}]" (a list of tuples)."""
                )
            register(full_key, *entry)
            names.append(entry[0])
    return names
