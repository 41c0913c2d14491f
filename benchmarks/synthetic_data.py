"""
Synthetic images for the benchmarks that need no data set (``gpu_check.py``): smooth random
backgrounds with a few coloured rectangles, written as JPEGs, with COCO-style labels (boxes and
polygon masks of the rectangles) and per-image proposals (the rectangles, jittered copies of
them and random boxes), registered as temporary Detectron2 datasets.
"""

import json
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

__all__ = ["SyntheticDatasets", "synthetic_image", "synthetic_proposals", "write_synthetic_coco"]

# (height, width) of the images, drawn per image: ImageNet / COCO-like sizes.
IMAGE_SIZES = ((375, 500), (480, 640), (640, 480), (427, 640))
# The category AlignDet's proposal files name (tools/prepare_proposals.py writes the same).
PROPOSAL_CATEGORY = {"id": 1, "name": "selective_search", "supercategory": "object"}
OBJECT_CATEGORY = {"id": 1, "name": "rectangle", "supercategory": "object"}


def synthetic_image(rng, height, width, max_objects=6):
    """
    A smooth random background (a coarse random colour grid, bicubic-upsampled) with 2 to
    ``max_objects`` filled rectangles of random colours and a little pixel noise.

    Args:
        rng (np.random.Generator): the random source.
        height, width (int): the image size.
        max_objects (int): the most rectangles.

    Returns:
        tuple: (uint8 array (height, width, 3) RGB, float array (N, 4) XYXY rectangles).
    """
    cells = rng.integers(0, 256, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
    image = Image.fromarray(cells.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    image = np.asarray(image, dtype=np.float32).copy()
    boxes = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        w = int(rng.uniform(0.1, 0.6) * width)
        h = int(rng.uniform(0.1, 0.6) * height)
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
        boxes.append([x0, y0, x0 + w, y0 + h])
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float64)


def synthetic_proposals(rng, boxes, height, width, num=100, min_size=16):
    """
    Proposals in the spirit of selective search: every object box, jittered copies of each
    (up to 20 % of its size per side), and random boxes filling the rest.

    Args:
        rng (np.random.Generator): the random source.
        boxes (ndarray): (N, 4) XYXY object boxes.
        height, width (int): the image size.
        num (int): proposals per image (at least N).
        min_size (int): the smallest side of a proposal, in pixels.

    Returns:
        ndarray: (num, 4) XYXY boxes inside the image, each side at least ``min_size``.
    """
    out = [boxes]
    jittered = num // 2 - len(boxes)
    if jittered > 0:
        base = boxes[rng.integers(0, len(boxes), size=jittered)]
        size = np.tile(base[:, 2:] - base[:, :2], 2)  # (w, h, w, h) per box
        out.append(base + rng.uniform(-0.2, 0.2, size=(jittered, 4)) * size)
    rest = num - sum(len(b) for b in out)
    if rest > 0:
        w = rng.uniform(min_size, width, size=rest)
        h = rng.uniform(min_size, height, size=rest)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        out.append(np.stack([x0, y0, x0 + w, y0 + h], axis=1))
    props = np.concatenate(out)[:num]
    props[:, [0, 2]] = props[:, [0, 2]].clip(0, width)
    props[:, [1, 3]] = props[:, [1, 3]].clip(0, height)
    # Widen boxes the clipping made too small, inside the image.
    for lo, hi, limit in ((0, 2, width), (1, 3, height)):
        short = props[:, hi] - props[:, lo] < min_size
        props[short, lo] = np.minimum(props[short, lo], limit - min_size)
        props[short, hi] = props[short, lo] + min_size
    return props


def _annotation(ann_id, image_id, box, category_id, with_mask):
    x0, y0, x1, y1 = (float(v) for v in box)
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": (x1 - x0) * (y1 - y0),
        "iscrowd": 0,
    }
    if with_mask:
        ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    return ann


def write_synthetic_coco(root, num_images, seed=0, num_proposals=100):
    """
    Write ``num_images`` synthetic JPEGs and two COCO jsons about them.

    Args:
        root (str): the folder to write into (``images/``, ``objects.json``, ``proposals.json``).
        num_images (int): how many images.
        seed (int): the seed of every draw; the same seed writes the same files.
        num_proposals (int): proposals per image.

    Returns:
        dict: "image_root", "objects" (json of the rectangles: boxes and polygon masks, one
        category) and "proposals" (json of the proposals, AlignDet's one category).
    """
    rng = np.random.default_rng(seed)
    image_root = os.path.join(root, "images")
    os.makedirs(image_root, exist_ok=True)
    images, objects, proposals = [], [], []
    for i in range(num_images):
        height, width = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        pixels, boxes = synthetic_image(rng, height, width)
        file_name = f"{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(image_root, file_name), quality=90)
        images.append({"id": i + 1, "file_name": file_name, "height": height, "width": width})
        for box in boxes:
            objects.append(_annotation(len(objects) + 1, i + 1, box, 1, with_mask=True))
        for box in synthetic_proposals(rng, boxes, height, width, num_proposals):
            proposals.append(_annotation(len(proposals) + 1, i + 1, box, 1, with_mask=False))
    paths = {"image_root": image_root}
    for key, anns, category in (
        ("objects", objects, OBJECT_CATEGORY),
        ("proposals", proposals, PROPOSAL_CATEGORY),
    ):
        paths[key] = os.path.join(root, f"{key}.json")
        with open(paths[key], "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": [category]}, f)
    return paths


class SyntheticDatasets:
    """
    Synthetic images registered as two Detectron2 datasets, ``<prefix>_objects`` (COCO boxes and
    polygon masks: fine-tuning; pretexts ignore the labels) and ``<prefix>_proposals`` (the
    proposals as one-category annotations: AlignDet), removed from the catalogs by :meth:`remove`.
    """

    def __init__(self, root, num_images, seed=0, prefix="synthetic"):
        """
        Args:
            root (str): the folder the files are written to.
            num_images (int): how many images.
            seed (int): the seed of the images, rectangles and proposals.
            prefix (str): the dataset names' prefix (unique in the process).
        """
        self.root = root
        paths = write_synthetic_coco(root, num_images, seed)
        self.objects, self.proposals = f"{prefix}_objects", f"{prefix}_proposals"
        for name, key in ((self.objects, "objects"), (self.proposals, "proposals")):
            register_coco_instances(name, {}, paths[key], paths["image_root"])

    def remove(self):
        """Unregister both datasets."""
        for name in (self.objects, self.proposals):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
