"""
The on-disk store of the pseudo-labeller: per-process part files of json lines, flushed in chunks
so that a killed run keeps what it labelled, and the final COCO json written from them.
"""

import glob
import json
import logging
import os
import time

from detectron2.utils import comm

from ..checkpoint.checkpointer import atomic_write

logger = logging.getLogger(__name__)


class PartWriter:
    """Appends records (one json line each) to this process's own part file, flushed to disk
    every ``chunk_size`` records: a killed run keeps what was flushed."""

    def __init__(self, parts_dir, chunk_size):
        name = f"part-{comm.get_rank()}-{time.time_ns()}-{os.getpid()}.jsonl"
        self.path = os.path.join(parts_dir, name)
        self.chunk_size = max(1, chunk_size)
        self._lines = []

    def add(self, record):
        self._lines.append(json.dumps(record) + "\n")
        if len(self._lines) >= self.chunk_size:
            self.flush()

    def flush(self):
        if not self._lines:
            return
        with open(self.path, "a") as f:
            f.writelines(self._lines)
            f.flush()
            os.fsync(f.fileno())
        self._lines = []


def read_parts(parts_dir):
    """
    Args:
        parts_dir (str): the folder of part files.

    Returns:
        dict[str, dict]: file_name -> record, from every complete line of every part file (a line
        cut by a kill is dropped: its image is labelled again).
    """
    records = {}
    for path in sorted(glob.glob(os.path.join(parts_dir, "*.jsonl"))):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                records[record["file_name"]] = record
    return records


def read_info(output_file):
    """The ``info`` entry of a finished pseudo-label json."""
    with open(output_file) as f:
        return json.load(f)["info"]


def write_coco_json(dataset_dicts, records, output_file, categories, image_root, info):
    """
    Write the COCO json of the labelled images, atomically, in the order of ``dataset_dicts``.

    Args:
        dataset_dicts (list[dict]): every image asked for (``file_name`` each).
        records (dict[str, dict]): :func:`read_parts`' output; one record per image, with
            ``image`` and ``annotations``, or ``error`` for an unreadable image (skipped).
        output_file (str): the json to write.
        categories (list[dict]): COCO categories.
        image_root (str): ``file_name`` is made relative to it when below it.
        info (dict or None): extra entries of the json's ``info``.

    Returns:
        dict: the json's ``info`` (``num_images``, ``num_annotations``, ``skipped_images``...).
    """
    images, annotations, skipped = [], [], []
    for d in dataset_dicts:
        record = records.get(d["file_name"])
        if record is None:
            raise RuntimeError(f"No pseudo-label record for {d['file_name']}")
        if "error" in record:
            skipped.append({"file_name": d["file_name"], "error": record["error"]})
            continue
        image = dict(record["image"])
        path = os.path.abspath(image["file_name"])
        if path.startswith(image_root + os.sep):
            image["file_name"] = os.path.relpath(path, image_root)
        images.append(image)
        for ann in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], **ann})
    info = dict(info or {})
    info.update(
        image_root=image_root,
        num_images=len(images),
        num_annotations=len(annotations),
        skipped_images=skipped,
        date_created=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    data = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    atomic_write(output_file, lambda f: f.write(json.dumps(data).encode()))
    logger.info(
        f"Wrote {output_file}: {len(images)} images, {len(annotations)} pseudo boxes, "
        f"{len(skipped)} unreadable images skipped"
    )
    return info
