"""
Pictures of boxes over images (``tools/visualize.py``): a proposals json (count per image in the
title), a pseudo-label json (Detectron2's ``Visualizer``: boxes, masks, class names and scores),
and the detections of a fine-tuned checkpoint (as Detectron2's demo draws them).
"""

import json
import os
from collections import defaultdict
from typing import Dict, List

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..data.image_io import read_image
from .draw import draw_boxes, grid, id_colors

__all__ = [
    "TITLE_HEIGHT",
    "class_colors",
    "draw_detections",
    "draw_proposals",
    "draw_pseudo_labels",
    "read_coco_json",
]

# The title strip above a picture, in pixels: the image's pixel (x, y) is at (x, y + TITLE_HEIGHT).
TITLE_HEIGHT = 16


def read_coco_json(json_file: str, image_root: str = None):
    """
    Args:
        json_file (str): a COCO json (proposals or pseudo-labels: XYWH ``bbox``, optional
            ``score`` and ``segmentation``).
        image_root (str or None): the root of its ``file_name``s; the json's
            ``info.image_root`` when None.

    Returns:
        tuple: (list of ``{"file_name", "annotations": [...]}`` in the json's image order, the
        categories ``{id: name}``).
    """
    with open(json_file) as f:
        data = json.load(f)
    root = image_root or data.get("info", {}).get("image_root", "")
    by_image: Dict[int, List[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    images = [
        {"file_name": os.path.join(root, im["file_name"]), "annotations": by_image[im["id"]]}
        for im in data["images"]
    ]
    return images, {c["id"]: c["name"] for c in data.get("categories", [])}


def _xyxy(ann):
    return BoxMode.convert(ann["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)


def draw_proposals(image_record: dict) -> np.ndarray:
    """
    Args:
        image_record (dict): one entry of :func:`read_coco_json`.

    Returns:
        ndarray: the RGB image under a title strip of :data:`TITLE_HEIGHT` pixels naming the
        count, each box in its own colour (:func:`id_colors`, in annotation order).
    """
    image = read_image(image_record["file_name"], format="RGB").copy()
    anns = image_record["annotations"]
    draw_boxes(image, [_xyxy(a) for a in anns], id_colors(len(anns)), thickness=1)
    title = f"{os.path.basename(image_record['file_name'])}: {len(anns)} proposals"
    return grid([image], [title], columns=1, pad=0, title_height=TITLE_HEIGHT)


def class_colors(num_classes: int) -> List[np.ndarray]:
    """One RGB colour in [0, 1] per category index, as the pseudo-label pictures use them."""
    return [np.array(c) / 255.0 for c in id_colors(num_classes)]


def draw_pseudo_labels(image_record: dict, categories: Dict[int, str]) -> np.ndarray:
    """
    Args:
        image_record (dict): one entry of :func:`read_coco_json`.
        categories (dict[int, str]): category id -> name.

    Returns:
        ndarray: the RGB image with Detectron2's ``Visualizer`` overlay: boxes (and masks where
        the json has ``segmentation``) coloured by category (:func:`class_colors` in the order of
        the sorted ids), labelled ``"<name> <score>"``.
    """
    image = read_image(image_record["file_name"], format="RGB")
    ids = sorted(categories)
    colors = class_colors(len(ids))
    anns = image_record["annotations"]
    labels = [
        f"{categories.get(a['category_id'], a['category_id'])} {a.get('score', 1.0):.2f}"
        for a in anns
    ]
    masks = (
        [a["segmentation"] for a in anns]
        if anns and all("segmentation" in a for a in anns)
        else None
    )
    vis = Visualizer(image, instance_mode=ColorMode.IMAGE)
    out = vis.overlay_instances(
        boxes=np.array([_xyxy(a) for a in anns]).reshape(-1, 4),
        labels=labels,
        masks=masks,
        assigned_colors=[colors[ids.index(a["category_id"])] for a in anns],
    )
    return out.get_image()


def draw_detections(predictor, image_file: str, metadata_name: str, threshold: float) -> np.ndarray:
    """
    Args:
        predictor (DefaultPredictor): the fine-tuned detector.
        image_file (str): an image path.
        metadata_name (str): the dataset whose ``thing_classes`` name the classes.
        threshold (float): the lowest score drawn.

    Returns:
        ndarray: the RGB image with Detectron2's ``draw_instance_predictions``.
    """
    image = read_image(image_file, format=predictor.input_format)
    instances = predictor(image)["instances"].to("cpu")
    instances = instances[instances.scores >= threshold]
    rgb = image[:, :, ::-1] if predictor.input_format == "BGR" else image
    vis = Visualizer(rgb, MetadataCatalog.get(metadata_name), instance_mode=ColorMode.IMAGE)
    return vis.draw_instance_predictions(instances).get_image()
