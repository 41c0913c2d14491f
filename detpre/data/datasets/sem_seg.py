"""
Semantic-segmentation datasets for Detectron2's ``SemanticSegmentor`` and ``SemSegEvaluator``: an
image folder paired with a folder of label PNGs of the same stems.

Predefined names (the layouts are in ``datasets/README.md``):

- ``coco_tiny_sem_seg_{train,val}``, ``coco128_sem_seg_train``: the bundled COCO images with
  labels of 13 classes (background and COCO's 12 supercategories) under
  ``$DETPRE_SEM_SEG/<images>/`` (default ``./sem_seg``), written by
  ``datasets/prepare_coco_sem_seg.py``.
- ``voc_2012_sem_seg_{train,train_aug,val}``: Pascal VOC 2012 under ``$DETECTRON2_DATASETS/VOC2012``
  (the folder of Detectron2's ``voc_2012_*`` detection names, with mmsegmentation's
  ``SegmentationClassAug`` and ``ImageSets/Segmentation/aug.txt`` added); ``train_aug`` is ``train.txt`` with
  ``SegmentationClass`` followed by ``aug.txt`` with ``SegmentationClassAug`` (10,582 images), as
  mmsegmentation's ``voc12aug`` config concatenates them.

Detectron2's own ``ade20k_sem_seg_{train,val}`` and ``cityscapes_fine_sem_seg_{train,val}`` are used
as they are.
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

__all__ = [
    "COCO_SEM_SEG_CLASSES",
    "COCO_SEM_SEG_SOURCES",
    "VOC_SEM_SEG_CLASSES",
    "load_sem_seg_dataset",
    "register_all_sem_seg",
    "register_sem_seg",
    "sem_seg_label_root",
]

logger = logging.getLogger(__name__)

# Background, then COCO's 12 supercategories in the order they first appear in its category list.
COCO_SEM_SEG_CLASSES = (
    "background",
    "person",
    "vehicle",
    "outdoor",
    "animal",
    "accessory",
    "sports",
    "kitchen",
    "food",
    "furniture",
    "electronic",
    "appliance",
    "indoor",
)
VOC_SEM_SEG_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# The bundled COCO sets with sem-seg labels: images -> (image_root, json_file) under
# $DETECTRON2_DATASETS; the labels of <images> are under sem_seg_label_root(<images>).
COCO_SEM_SEG_SOURCES = {
    "coco_tiny_train": ("coco_tiny/train2017", "coco_tiny/annotations/instances_train2017.json"),
    "coco_tiny_val": ("coco_tiny/val2017", "coco_tiny/annotations/instances_val2017.json"),
    "coco128_train": ("coco128/train2017", "coco128/annotations/instances_train2017.json"),
}
_COCO_SEM_SEG_NAMES = {
    "coco_tiny_sem_seg_train": "coco_tiny_train",
    "coco_tiny_sem_seg_val": "coco_tiny_val",
    "coco128_sem_seg_train": "coco128_train",
}
_COCO_HINT = (
    "Make the labels with datasets/prepare_coco_sem_seg.py (it writes there by default; "
    "$DETPRE_SEM_SEG moves them)."
)

# The folder of Detectron2's VOC 2012 detection names, holding the segmentation files too.
_VOC_ROOT = "VOC2012"
# name -> [(label folder, split file)] under _VOC_ROOT, concatenated in order.
_VOC_SEM_SEG = {
    "voc_2012_sem_seg_train": [("SegmentationClass", "train")],
    "voc_2012_sem_seg_train_aug": [("SegmentationClass", "train"), ("SegmentationClassAug", "aug")],
    "voc_2012_sem_seg_val": [("SegmentationClass", "val")],
}
_VOC_HINT = (
    "VOC2012 comes from the VOC devkit tar; SegmentationClassAug and "
    "ImageSets/Segmentation/aug.txt are made from the SBD release by mmsegmentation's "
    "tools/convert_datasets/voc_aug.py (see datasets/README.md)."
)
# How many expected paths a missing-files error lists.
_MAX_LISTED_PATHS = 3


def sem_seg_label_root(dataset, root=None):
    """
    Args:
        dataset (str): the image dataset the labels are of ("coco_tiny_val", ...).
        root (str or None): the labels folder; None reads ``$DETPRE_SEM_SEG`` (default
            ``./sem_seg``), as Detectron2 reads ``$DETECTRON2_DATASETS``.

    Returns:
        str: ``<root>/<dataset>``, the folder of the ``<stem>.png`` labels.
    """
    if root is None:
        root = os.path.expanduser(os.getenv("DETPRE_SEM_SEG", "sem_seg"))
    return os.path.join(root, dataset)


def _require_folder(path, what, name):
    if not PathManager.isdir(path):
        raise FileNotFoundError(f"Dataset {name!r}: {what} {path} does not exist")


def _read_split(split_file, name):
    if not PathManager.isfile(split_file):
        raise FileNotFoundError(f"Dataset {name!r}: split file {split_file} does not exist")
    with PathManager.open(split_file) as f:
        stems = [line.strip() for line in f if line.strip()]
    if not stems:
        raise ValueError(f"Dataset {name!r}: split file {split_file} lists no images")
    return stems


def _check_exist(paths, what, name, folder):
    missing = [p for p in paths if not PathManager.isfile(p)]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED_PATHS])
        raise FileNotFoundError(
            f"Dataset {name!r}: {len(missing)} of {len(paths)} {what} are missing in {folder}; "
            f"the first expected: {listed}"
        )


def load_sem_seg_dataset(
    image_root, gt_root, *, split_file=None, image_ext=".jpg", gt_ext=".png", name=None
):
    """
    Pair the images of a folder with their label files of the same stem.

    Args:
        image_root (str): the image folder (flat, as VOC's ``JPEGImages`` or COCO's
            ``val2017``).
        gt_root (str): the label folder, ``<stem><gt_ext>`` per image.
        split_file (str or None): a text file of image stems, one per line (VOC's
            ``ImageSets/Segmentation/*.txt``); None takes every ``*<image_ext>`` file of
            ``image_root`` (hidden files skipped), sorted by name.
        image_ext (str): the image files' extension, with the dot.
        gt_ext (str): the label files' extension, with the dot.
        name (str or None): the dataset name, for errors.

    Returns:
        list[dict]: one per image, in order: ``file_name``, ``sem_seg_file_name``, ``image_id``
        (the stem). Sizes are not read (Detectron2's mapper adds ``height`` and ``width``).

    Raises:
        FileNotFoundError: a folder or split file is missing, or images / labels are (naming the
            dataset, how many and the first few expected paths).
    """
    name = name or gt_root
    _require_folder(image_root, "image folder", name)
    _require_folder(gt_root, "label folder", name)
    if split_file is not None:
        stems = _read_split(split_file, name)
    else:
        files = sorted(
            f for f in PathManager.ls(image_root) if f.endswith(image_ext) and not f.startswith(".")
        )
        stems = [f[: -len(image_ext)] for f in files]
        if not stems:
            raise FileNotFoundError(f"Dataset {name!r}: no *{image_ext} images in {image_root}")
    dicts = [
        {
            "file_name": os.path.join(image_root, stem + image_ext),
            "sem_seg_file_name": os.path.join(gt_root, stem + gt_ext),
            "image_id": stem,
        }
        for stem in stems
    ]
    if split_file is not None:
        _check_exist([d["file_name"] for d in dicts], "images", name, image_root)
    _check_exist([d["sem_seg_file_name"] for d in dicts], "labels", name, gt_root)
    return dicts


def _load_parts(name, parts, hint, exts):
    dicts = []
    try:
        for image_root, gt_root, split_file in parts:
            dicts.extend(
                load_sem_seg_dataset(image_root, gt_root, split_file=split_file, name=name, **exts)
            )
    except FileNotFoundError as err:
        if hint is None:
            raise
        raise FileNotFoundError(f"{err}. {hint}") from err
    seen, duplicates = set(), set()
    for d in dicts:
        (duplicates if d["image_id"] in seen else seen).add(d["image_id"])
    if duplicates:
        logger.warning(
            "Dataset %r lists %d images more than once (e.g. %s): its split files overlap",
            name,
            len(duplicates),
            sorted(duplicates)[0],
        )
    logger.info("Loaded %d images with semantic-segmentation labels for %r", len(dicts), name)
    return dicts


def _register(name, parts, classes, ignore_label, hint=None, **exts):
    # parts: [(image_root, gt_root, split_file)], loaded in order and concatenated.
    DatasetCatalog.register(name, lambda: _load_parts(name, parts, hint, exts))
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes),
        ignore_label=ignore_label,
        evaluator_type="sem_seg",
        image_root=parts[0][0],
        sem_seg_root=parts[0][1],
    )


def register_sem_seg(
    name,
    image_root,
    gt_root,
    classes,
    *,
    ignore_label=255,
    split_file=None,
    image_ext=".jpg",
    gt_ext=".png",
):
    """
    Register an image folder with its label folder (see :func:`load_sem_seg_dataset`); nothing is
    read until the dataset is loaded.

    Args:
        name (str): the dataset name.
        image_root, gt_root, split_file, image_ext, gt_ext: see :func:`load_sem_seg_dataset`.
        classes (sequence[str]): the class names, label value i being ``classes[i]``.
        ignore_label (int): the label value of unlabelled pixels.

    Metadata: ``stuff_classes``, ``ignore_label``, ``evaluator_type="sem_seg"``, ``image_root``,
    ``sem_seg_root``.
    """
    parts = [(image_root, gt_root, split_file)]
    _register(name, parts, classes, ignore_label, image_ext=image_ext, gt_ext=gt_ext)


def register_all_sem_seg(datasets_root, sem_seg_root=None):
    """
    Register the predefined semantic-segmentation datasets: the bundled COCO sets and Pascal VOC
    2012 (train, train_aug, val). For ``voc_2012_sem_seg_train_aug`` the metadata's ``image_root``
    and ``sem_seg_root`` are those of its first part (``SegmentationClass``).

    Args:
        datasets_root (str): ``$DETECTRON2_DATASETS``.
        sem_seg_root (str or None): the COCO labels' root, see :func:`sem_seg_label_root`.
    """
    for name, images in _COCO_SEM_SEG_NAMES.items():
        image_root = os.path.join(datasets_root, COCO_SEM_SEG_SOURCES[images][0])
        parts = [(image_root, sem_seg_label_root(images, sem_seg_root), None)]
        _register(name, parts, COCO_SEM_SEG_CLASSES, 255, _COCO_HINT)
    voc = os.path.join(datasets_root, _VOC_ROOT)
    for name, splits in _VOC_SEM_SEG.items():
        parts = [
            (
                os.path.join(voc, "JPEGImages"),
                os.path.join(voc, labels),
                os.path.join(voc, "ImageSets", "Segmentation", split + ".txt"),
            )
            for labels, split in splits
        ]
        _register(name, parts, VOC_SEM_SEG_CLASSES, 255, _VOC_HINT)
