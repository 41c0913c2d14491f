"""
Unsupervised box proposals for box-domain pretraining: selective search over any registered
dataset, filtered as in SoCo (Wei et al., "Aligning Pretraining for Detection via Object-Level
Contrastive Learning", NeurIPS 2021) and AlignDet (Li et al., "AlignDet: Aligning Pre-training and
Fine-tuning in Object Detection", ICCV 2023), written as a one-category COCO json:

    python tools/prepare_proposals.py --dataset coco_2017_train --preset aligndet \
        --output proposals/coco_2017_train_aligndet.json

The proposals are then an ordinary dataset of any detpre command (the tool prints the exact
``image_root``: the source dataset's, as the json's ``file_name`` are relative to it):

    tools/pretrain_net.py --config-file ... DATASETS.REGISTER_COCO \
        "[('coco_2017_train_ss', 'proposals/coco_2017_train_aligndet.json', 'coco/train2017')]" \
        DATASETS.TRAIN "('coco_2017_train_ss',)"

A proposals file made elsewhere in that format (AlignDet's released
``train2017_ratio3size0008@0.5.json``: images, annotations with XYWH ``bbox``, one category)
registers the same way.

Image ids are the dataset's ``image_id`` where it is an int (COCO), else 63 bits of its SHA-1
(VOC names, image-folder paths), the original kept as ``dataset_image_id``. The steps per image:

1. selective search with a backend of :mod:`.search`: ``soco`` (SoCo's generator at full
   resolution, the presets' default) or ``opencv`` (OpenCV's fast mode on the image resized to
   512, about as fast, other boxes);
2. SoCo's filter (:func:`.filters.proposal_keep_mask`), then optional NMS and top-k;
3. the boxes are written as XYWH with 2 decimals.

Resumable: each finished image is appended to ``<output stem>.partial.jsonl`` (kept after the run,
as the cache a rerun reads: images in it are not processed again). The final json is written
atomically. An unreadable image is logged, skipped and listed in the json's ``info``. Progress
(images done, rate, ETA) is logged every ``progress_period`` seconds, for logs of cluster jobs
where tqdm's bar is unreadable.
"""

import datetime
import hashlib
import json
import logging
import multiprocessing as mp
import os
import time

import cv2
import numpy as np
import torch
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..image_io import CorruptImageError, read_image
from .filters import filter_proposals
from .search import BACKENDS

__all__ = ["generate_proposals", "propose_image", "search_args", "stable_image_id"]

logger = logging.getLogger(__name__)

# The category AlignDet's dataset config names (``classes=['selective_search']``): a file written
# here loads into the release unchanged, and a released file into detpre.
CATEGORY = {"id": 1, "name": "selective_search", "supercategory": "object"}
_PARTIAL_FORMAT = 2


def search_args(backend, resize=None, **overrides):
    """
    Args:
        backend (str): a name of :data:`.search.BACKENDS`.
        resize (int or None): the size the image is searched at (longer side); None keeps the
            backend's default (soco: full resolution, opencv: 512), 0 the full resolution.
        overrides: other keyword arguments of the backend.

    Returns:
        dict: the backend's keyword arguments, defaults filled in.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"Proposal backend {backend!r} is unknown: expected one of {sorted(BACKENDS)}"
        )
    args = dict(BACKENDS[backend][1])
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise ValueError(f"Proposal backend {backend!r} has no option {unknown}")
    args.update(overrides)
    if resize is not None:
        args["resize"] = resize
    return args


def propose_image(file_name, *, backend="soco", search=None, seed=0, **filters):
    """
    Read an image, run a selective search backend and :func:`.filters.filter_proposals`.

    Args:
        file_name (str): image path.
        backend (str): a name of :data:`.search.BACKENDS`.
        search (dict or None): the backend's keyword arguments (:func:`search_args`).
        seed (int): the backend's seed (the opencv ranking).
        filters: keyword arguments of :func:`.filters.filter_proposals`.

    Returns:
        tuple[Tensor, tuple[int, int]]: (K, 4) XYXY boxes in the backend's order, and (height,
        width) of the image as Detectron2 reads it (EXIF orientation applied).

    Raises:
        CorruptImageError: the file cannot be read.
    """
    image = read_image(file_name, format="BGR")
    image_size = image.shape[:2]
    function = BACKENDS[backend][0]
    boxes = function(image, seed=seed, **(search if search is not None else search_args(backend)))
    return boxes[filter_proposals(boxes, image_size, **filters)], image_size


def stable_image_id(image_id):
    """
    Args:
        image_id (int or str): a dataset's ``image_id``.

    Returns:
        int: ``image_id`` itself when an int, else 63 bits of its SHA-1 (the same in every run).
    """
    if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, bool):
        return int(image_id)
    return int.from_bytes(hashlib.sha1(str(image_id).encode()).digest()[:8], "big") >> 1


def _check_params(resize, min_size, max_aspect_ratio, area_range, nms_thresh, topk):
    lo, hi = area_range
    checks = [
        (not resize or resize > 0, "resize", resize, "an int >= 0 (0: no resize)"),
        (min_size >= 0, "min_size", min_size, ">= 0"),
        (max_aspect_ratio is None or max_aspect_ratio >= 1, "max_aspect_ratio", max_aspect_ratio,
         ">= 1 or None"),
        (0 <= lo <= hi, "area_range", area_range, "(lo, hi) with 0 <= lo <= hi"),
        (nms_thresh is None or 0 < nms_thresh <= 1, "nms_thresh", nms_thresh, "in (0, 1] or None"),
        (topk is None or topk > 0, "topk", topk, "> 0 or None"),
    ]  # fmt: skip
    for ok, name, value, expected in checks:
        if not ok:
            raise ValueError(f"Proposal option {name}={value!r} is invalid: expected {expected}.")


def _init_worker():
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _process(task):
    """One image -> a record for the partial file (boxes XYWH, 2 decimals), or its error."""
    image_id, file_name, params = task
    try:
        boxes, (height, width) = propose_image(file_name, **params)
    except (CorruptImageError, cv2.error) as e:
        return {"id": image_id, "error": f"{file_name}: {e}".replace("\n", " ")}
    boxes = boxes.double().round(decimals=2)  # corners first: rounded boxes stay in the image
    boxes[:, 2:] = (boxes[:, 2:] - boxes[:, :2]).round(decimals=2)
    return {"id": image_id, "height": height, "width": width, "boxes": boxes.tolist()}


def _load_partial(path, params):
    """Records of a previous run (a new file when none); an error when it had other parameters."""
    text = ""
    if os.path.isfile(path):
        with open(path) as f:
            text = f.read()
    if not text.strip():
        with open(path, "w") as f:
            f.write(json.dumps({"format": _PARTIAL_FORMAT, "params": params}) + "\n")
        return {}
    if not text.endswith("\n"):  # interrupted mid-line: drop the incomplete record
        logger.warning(f"{path}: dropping an incomplete last line (an interrupted run).")
        text = text[: text.rfind("\n") + 1]
        with open(path, "r+") as f:
            f.truncate(len(text.encode()))
    lines = text.splitlines()
    header = json.loads(lines[0]) if lines else {}
    old = header.get("params")
    if header.get("format") != _PARTIAL_FORMAT or old != json.loads(json.dumps(params)):
        raise ValueError(
            f"{path} holds proposals made with other options ({old}, not {params}): delete it or "
            "choose another output."
        )
    records = (json.loads(line) for line in lines[1:])
    return {r["id"]: r for r in records}


def _image_root(dataset_name, dicts):
    root = MetadataCatalog.get(dataset_name).get("image_root", None)
    if root is None:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(d["file_name"])) for d in dicts])
    return root


def _relative(file_name, root):
    rel = os.path.relpath(os.path.abspath(file_name), os.path.abspath(root))
    outside = rel == os.pardir or rel.startswith(os.pardir + os.sep)
    return file_name if outside else rel


def _tasks(dicts, image_root, params, seed):
    """(id, file, params) per image, the json's file names and the dataset's ids, by id."""
    tasks, names, source_ids = [], {}, {}
    for d in dicts:
        image_id = stable_image_id(d["image_id"])
        if image_id in names:
            raise ValueError(
                f"Images {names[image_id]} and {d['file_name']} have the same id {image_id}: "
                "proposal files need one id per image."
            )
        names[image_id] = _relative(d["file_name"], image_root)
        source_ids[image_id] = d["image_id"]
        image_seed = (seed * 1_000_003 + image_id) % 2**32
        tasks.append((image_id, d["file_name"], dict(params, seed=image_seed)))
    return tasks, names, source_ids


def _run(tasks, workers):
    """Yield the records of ``tasks`` as they finish, over ``workers`` processes."""
    if workers == 1:
        threads = cv2.getNumThreads(), torch.get_num_threads()
        _init_worker()
        try:
            yield from map(_process, tasks)
        finally:
            cv2.setNumThreads(threads[0])
            torch.set_num_threads(threads[1])
        return
    # "spawn": a forked child of a process whose OpenMP pool has run (torch, OpenCV) can hang in
    # its first OpenMP call.
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_process, tasks, chunksize=1)


class _Progress:
    """Logs ``selective search: done/total images, rate img/s, ETA`` every ``period`` seconds
    and at the end."""

    def __init__(self, total, period):
        self.total, self.period, self.done = total, period, 0
        self.start = self.last = time.perf_counter()

    def step(self):
        self.done += 1
        now = time.perf_counter()
        if now - self.last < self.period and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = datetime.timedelta(seconds=round((self.total - self.done) / rate))
        logger.info(
            f"selective search: {self.done}/{self.total} images, {rate:.2f} img/s, ETA {eta}"
        )


def _coco_json(tasks, records, names, source_ids, info):
    images, annotations = [], []
    for image_id, _, _ in tasks:
        record = records.get(image_id)
        if record is None:
            continue
        image = {"id": image_id, "file_name": names[image_id]}
        image.update(height=record["height"], width=record["width"])
        if source_ids[image_id] != image_id:
            image["dataset_image_id"] = source_ids[image_id]
        images.append(image)
        for box in record["boxes"]:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY["id"]}
            annotations.append(dict(ann, bbox=box, area=round(box[2] * box[3], 2), iscrowd=0))
    return {"info": info, "images": images, "annotations": annotations, "categories": [CATEGORY]}


def generate_proposals(
    dataset_name,
    output,
    *,
    backend="soco",
    resize=None,
    search=None,
    min_size=32,
    max_aspect_ratio=3.0,
    area_range=(0.0, 0.8),
    nms_thresh=None,
    topk=None,
    workers=None,
    max_images=None,
    seed=0,
    progress_period=60.0,
):
    """
    Selective search proposals for every image of a registered dataset (labels ignored), written
    as a one-category COCO json (see the module docstring). Resumes from ``output``'s partial file.

    Args:
        dataset_name (str): a name in Detectron2's ``DatasetCatalog``.
        output (str): the json to write.
        backend (str): the selective search of :data:`.search.BACKENDS` ("soco" or "opencv").
        resize (int or None): see :func:`search_args`.
        search (dict or None): other keyword arguments of the backend.
        seed (int): seed of the opencv backend's ranking (per image: from it and the image id).
        min_size, max_aspect_ratio, area_range, nms_thresh, topk: see
            :func:`.filters.filter_proposals` (defaults: the ``aligndet`` preset).
        workers (int or None): processes; None uses ``os.cpu_count()``; 1 runs in this process.
        max_images (int or None): only the dataset's first ``max_images`` images.
        progress_period (float): seconds between progress lines in the log (images done, rate,
            ETA).

    Returns:
        dict: ``output``, ``image_root`` (to register the json with), ``num_images``,
        ``num_proposals``, ``processed`` (images searched in this call), ``reused`` (from the
        partial file), ``skipped`` (list of "file: error" of unreadable images),
        ``images_without_proposals``.
    """
    area_range = tuple(float(x) for x in area_range)
    search = search_args(backend, resize, **(search or {}))
    _check_params(search["resize"], min_size, max_aspect_ratio, area_range, nms_thresh, topk)
    params = dict(backend=backend, search=search, min_size=min_size)
    params.update(max_aspect_ratio=max_aspect_ratio, area_range=area_range)
    params.update(nms_thresh=nms_thresh, topk=topk)
    dicts = DatasetCatalog.get(dataset_name)[:max_images]
    if not dicts:
        raise ValueError(f"Dataset {dataset_name!r} has no images.")
    image_root = _image_root(dataset_name, dicts)
    tasks, names, source_ids = _tasks(dicts, image_root, params, seed)

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    partial = os.path.splitext(output)[0] + ".partial.jsonl"
    records = _load_partial(partial, dict(params, seed=seed))
    todo = [t for t in tasks if t[0] not in records]
    reused = len(tasks) - len(todo)
    if reused:
        logger.info(f"Reusing {reused} images from {partial}; {len(todo)} left to process.")
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    skipped = []
    progress = _Progress(len(todo), progress_period)
    with open(partial, "a") as f:
        results = _run(todo, workers)
        for record in tqdm.tqdm(results, total=len(todo), desc="selective search", unit="img"):
            progress.step()
            if "error" in record:
                logger.warning(f"Skipping an unreadable image: {record['error']}")
                skipped.append(record["error"])
                continue
            record["file_name"] = names[record["id"]]
            f.write(json.dumps(record) + "\n")
            f.flush()
            records[record["id"]] = record

    info = {
        "description": f"Selective search proposals of {dataset_name} (detpre)",
        "date_created": datetime.datetime.now().isoformat(timespec="seconds"),
        "dataset": dataset_name,
        "image_root": image_root,
        "params": dict(params, seed=seed),
        "skipped_images": skipped,
    }
    coco = _coco_json(tasks, records, names, source_ids, info)
    empty = len(coco["images"]) - len({a["image_id"] for a in coco["annotations"]})
    info.update(images_without_proposals=empty)
    tmp = f"{output}.tmp"
    with open(tmp, "w") as f:
        json.dump(coco, f)
    os.replace(tmp, output)
    logger.info(
        f"Wrote {len(coco['annotations'])} proposals of {len(coco['images'])} images to {output} "
        f"({len(skipped)} unreadable images skipped, {empty} images without proposals)."
    )
    return dict(
        output=output,
        image_root=image_root,
        num_images=len(coco["images"]),
        num_proposals=len(coco["annotations"]),
        processed=len(todo),
        reused=reused,
        skipped=skipped,
        images_without_proposals=empty,
    )
