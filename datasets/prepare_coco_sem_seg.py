#!/usr/bin/env python
"""
Write semantic-segmentation labels for the bundled COCO sets: 13 classes, background and COCO's 12
supercategories (``detpre.data.datasets.COCO_SEM_SEG_CLASSES``), one uint8 'L' PNG per image of
the json, ``<output-root>/<dataset>/<stem>.png``, read by ``coco_tiny_sem_seg_{train,val}`` and
``coco128_sem_seg_train``.

The rule: 0 is background; the non-crowd instances are painted in order of decreasing area (the
json's ``area``; ties in json order), so smaller objects stay on top, each with 1 + the index of
its category's supercategory; then the pixels of crowd annotations that are still background
become 255 (ignored). Existing files are kept unless ``--overwrite``.

    python datasets/prepare_coco_sem_seg.py                     # all three, into $DETPRE_SEM_SEG
    python datasets/prepare_coco_sem_seg.py --datasets coco_tiny_val --output-root /tmp/sem_seg
"""

import argparse
import os

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from detpre.data.datasets.sem_seg import (
    COCO_SEM_SEG_CLASSES,
    COCO_SEM_SEG_SOURCES,
    sem_seg_label_root,
)
from detpre.data.sem_seg_io import read_sem_seg_label

__all__ = ["IGNORE_LABEL", "category_to_class", "main", "rasterize", "write_labels"]

IGNORE_LABEL = 255


def category_to_class(categories, json_file="the json"):
    """
    Args:
        categories (list[dict]): a COCO json's ``categories`` (``id``, ``name``,
            ``supercategory``).
        json_file (str): the json, for errors.

    Returns:
        dict[int, int]: category id -> 1 + the index of its supercategory in
        ``COCO_SEM_SEG_CLASSES[1:]``.
    """
    mapping = {}
    for cat in categories:
        supercategory = cat.get("supercategory")
        if supercategory not in COCO_SEM_SEG_CLASSES[1:]:
            raise ValueError(
                f"{json_file}: category {cat['id']} ({cat.get('name')!r}) has supercategory "
                f"{supercategory!r}, not one of {list(COCO_SEM_SEG_CLASSES[1:])}"
            )
        mapping[cat["id"]] = COCO_SEM_SEG_CLASSES.index(supercategory)
    return mapping


def rasterize(coco, image_id, class_of):
    """
    The label map of one image, by the rule of the module docstring.

    Args:
        coco (COCO): the pycocotools index of the json.
        image_id (int): the image.
        class_of (dict[int, int]): category id -> class, from :func:`category_to_class`.

    Returns:
        np.ndarray: (H, W) uint8, H and W the json's ``height`` and ``width``.
    """
    info = coco.imgs[image_id]
    label = np.zeros((info["height"], info["width"]), dtype=np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    things = sorted((a for a in anns if not a.get("iscrowd", 0)), key=lambda a: -a["area"])
    for ann in things:
        label[coco.annToMask(ann) > 0] = class_of[ann["category_id"]]
    for ann in anns:
        if ann.get("iscrowd", 0):
            label[(coco.annToMask(ann) > 0) & (label == 0)] = IGNORE_LABEL
    return label


def _save_png(label, path):
    tmp = path + ".tmp.png"
    Image.fromarray(label).save(tmp)  # 2-D uint8: mode "L"
    os.replace(tmp, path)


def write_labels(dataset, json_file, output_dir, overwrite=False):
    """
    Write the label PNG of every image of a COCO json into ``output_dir``.

    Args:
        dataset (str): the dataset name, for the printed lines.
        json_file (str): the COCO instances json.
        output_dir (str): the label folder, created if needed.
        overwrite (bool): rewrite existing labels (else they are kept, and counted as they are).

    Returns:
        dict: ``images``, ``written``, ``skipped`` (int) and ``pixels``: (14,) int64, the pixels
        of each class of ``COCO_SEM_SEG_CLASSES`` then of the ignore value, over all labels.
    """
    coco = COCO(json_file)
    class_of = category_to_class(coco.dataset["categories"], json_file)
    os.makedirs(output_dir, exist_ok=True)
    num_classes = len(COCO_SEM_SEG_CLASSES)
    pixels = np.zeros(num_classes + 1, dtype=np.int64)
    written = skipped = 0
    for image in coco.dataset["images"]:
        stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
        path = os.path.join(output_dir, stem + ".png")
        if os.path.isfile(path) and not overwrite:
            label = read_sem_seg_label(
                path,
                num_classes=num_classes,
                ignore_label=IGNORE_LABEL,
                image_size=(image["height"], image["width"]),
            )
            skipped += 1
        else:
            label = rasterize(coco, image["id"], class_of)
            _save_png(label, path)
            written += 1
        values = np.where(label == IGNORE_LABEL, num_classes, label)
        pixels += np.bincount(values.ravel(), minlength=num_classes + 1)
    stats = {
        "images": len(coco.dataset["images"]),
        "written": written,
        "skipped": skipped,
        "pixels": pixels,
    }
    _print_stats(dataset, output_dir, stats)
    return stats


def _print_stats(dataset, output_dir, stats):
    total = max(int(stats["pixels"].sum()), 1)
    names = list(COCO_SEM_SEG_CLASSES) + [f"ignore ({IGNORE_LABEL})"]
    print(f"{dataset}: {stats['images']} images; pixels per class:")
    for name, count in zip(names, stats["pixels"].tolist()):
        print(f"  {name:<14} {count:>12,} ({100 * count / total:5.2f}%)")
    print(
        f"{dataset}: {stats['written']} labels written, {stats['skipped']} kept, "
        f"{stats['images']} images -> {output_dir}"
    )


def main(argv=None):
    """
    Args:
        argv (list[str] or None): command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        dict[str, dict]: dataset -> the statistics of :func:`write_labels`.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(COCO_SEM_SEG_SOURCES),
        choices=list(COCO_SEM_SEG_SOURCES),
        help="the image sets to label (default: all)",
    )
    parser.add_argument(
        "--datasets-root",
        default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="where the COCO jsons are (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument(
        "--output-root",
        default=None,
        help="the labels' root; <root>/<dataset>/<stem>.png (default: $DETPRE_SEM_SEG or "
        "./sem_seg)",
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing labels")
    args = parser.parse_args(argv)
    results = {}
    for dataset in args.datasets:
        json_file = os.path.join(args.datasets_root, COCO_SEM_SEG_SOURCES[dataset][1])
        if not os.path.isfile(json_file):
            parser.error(f"{dataset}: the json {json_file} does not exist (--datasets-root)")
        output_dir = sem_seg_label_root(dataset, args.output_root)
        results[dataset] = write_labels(dataset, json_file, output_dir, args.overwrite)
    images = sum(r["images"] for r in results.values())
    written = sum(r["written"] for r in results.values())
    print(
        f"Done: {len(results)} datasets, {images} images, {written} labels written, "
        f"{images - written} kept."
    )
    return results


if __name__ == "__main__":
    main()
