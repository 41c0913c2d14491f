"""
Pascal VOC layout datasets: Detectron2's loader, minus degenerate boxes.

Detectron2's ``load_voc_instances`` reads the XML files and shifts the 1-based inclusive corners to
its 0-based coordinates (x1 = xmin - 1, x2 = xmax). A box annotated with xmax <= xmin or
ymax <= ymin (a click instead of a drag; BCCD has two) then becomes at most one pixel wide or tall,
which ``filter_empty_instances`` keeps. Such boxes are dropped here with a warning naming the file
and the box, and a summary count.
"""

import logging
import os
import xml.etree.ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import load_voc_instances as _d2_load_voc_instances
from detectron2.utils.file_io import PathManager

__all__ = ["load_voc_instances", "register_voc", "voc_class_names"]

logger = logging.getLogger(__name__)


def _annotation_file(dirname, image_id):
    return os.path.join(dirname, "Annotations", f"{image_id}.xml")


def _object_names(xml_file):
    with PathManager.open(xml_file) as f:
        tree = ET.parse(f)
    return [obj.find("name").text for obj in tree.findall("object")]


def voc_class_names(dirname):
    """
    The class names used in a VOC layout folder, sorted. All of ``Annotations/*.xml`` is read (not
    one split), so every split of a folder gets the same classes in the same order.

    Args:
        dirname (str): folder holding ``Annotations/``, ``ImageSets/Main/`` and ``JPEGImages/``.

    Returns:
        list[str]
    """
    ann_dir = os.path.join(dirname, "Annotations")
    xml_files = [f for f in PathManager.ls(ann_dir) if f.endswith(".xml")]
    if not xml_files:
        raise FileNotFoundError(f"No .xml annotation files in {ann_dir}")
    names = set()
    for xml_file in xml_files:
        names.update(_object_names(os.path.join(ann_dir, xml_file)))
    if not names:
        raise ValueError(f"The annotations in {ann_dir} contain no objects: no class names")
    return sorted(names)


def _raise_unknown_class(dirname, split, class_names, err):
    # Detectron2's loader fails with "'x' is not in list"; find and name the file.
    with PathManager.open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
        image_ids = f.read().split()
    for image_id in image_ids:
        xml_file = _annotation_file(dirname, image_id)
        unknown = sorted(set(_object_names(xml_file)) - set(class_names))
        if unknown:
            raise ValueError(
                f"{xml_file} has objects of classes {unknown} that are not among the dataset's "
                f"class names {list(class_names)}"
            ) from err
    raise err


def _drop_degenerate_boxes(dicts, dirname, split, class_names):
    num_dropped, num_images = 0, 0
    for record in dicts:
        kept = []
        for anno in record["annotations"]:
            x1, y1, x2, y2 = anno["bbox"]
            if x2 - x1 > 1 and y2 - y1 > 1:
                kept.append(anno)
                continue
            # Back to the corners written in the file (Detectron2 subtracted 1 from xmin, ymin).
            written = [x1 + 1, y1 + 1, x2, y2]
            logger.warning(
                f"Dropping degenerate box (xmin, ymin, xmax, ymax) = {written} of class "
                f"{class_names[anno['category_id']]!r} in "
                f"{_annotation_file(dirname, record['image_id'])}"
            )
        if len(kept) < len(record["annotations"]):
            num_dropped += len(record["annotations"]) - len(kept)
            num_images += 1
        record["annotations"] = kept
    if num_dropped:
        logger.warning(
            f"Dropped {num_dropped} degenerate boxes (xmax <= xmin or ymax <= ymin) from "
            f"{num_images} images of {dirname} split {split!r}."
        )
    return dicts


def load_voc_instances(dirname, split, class_names):
    """
    Load a Pascal VOC layout split to Detectron2's format with Detectron2's loader, then drop the
    degenerate boxes (annotated xmax <= xmin or ymax <= ymin).

    Args:
        dirname (str): folder holding ``Annotations/``, ``ImageSets/Main/`` and ``JPEGImages/``.
        split (str): a file name in ``ImageSets/Main/`` without ``.txt``, e.g. "trainval".
        class_names (list[str] or tuple[str]): the classes; their order sets ``category_id``.

    Returns:
        list[dict]: Detectron2 dataset dicts, boxes in XYXY_ABS.
    """
    try:
        dicts = _d2_load_voc_instances(dirname, split, list(class_names))
    except ValueError as e:
        _raise_unknown_class(dirname, split, class_names, e)
    dicts = _drop_degenerate_boxes(dicts, dirname, split, class_names)
    num_boxes = sum(len(d["annotations"]) for d in dicts)
    logger.info(f"Loaded {len(dicts)} images, {num_boxes} boxes from {dirname} split {split!r}.")
    return dicts


def register_voc(name, dirname, split, year, class_names):
    """
    Register a VOC layout split with the metadata Detectron2's ``PascalVOCDetectionEvaluator``
    reads (``dirname``, ``year``, ``split``, ``thing_classes``) and ``evaluator_type="pascal_voc"``.

    Args:
        name (str): the dataset name.
        dirname (str): folder holding ``Annotations/``, ``ImageSets/Main/`` and ``JPEGImages/``.
        split (str): a file name in ``ImageSets/Main/`` without ``.txt``.
        year (int): 2007 selects the VOC07 11-point AP in the evaluator, other years the area AP.
        class_names (list[str] or tuple[str]): the classes, in ``category_id`` order.
    """
    class_names = list(class_names)
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
    MetadataCatalog.get(name).set(
        thing_classes=class_names,
        dirname=dirname,
        year=year,
        split=split,
        evaluator_type="pascal_voc",
    )
