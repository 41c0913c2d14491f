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

Image ids are the dataset's ``image_id`` where it is an int (COCO), else 63 bits of its SHA-1
(VOC names, image-folder paths), the original kept as ``dataset_image_id``. The steps per image:

1. resize so the image fits ``resize`` x ``resize`` (longer side = ``resize``, up or down, aspect
   kept), run OpenCV's fast selective search (``switchToSelectiveSearchFast``) and map the boxes
   back to the original image. The search time grows fast with the pixel count; SoCo searched
   ImageNet images (about 500 px) at their own size, and 512 keeps COCO images near that scale;
2. keep boxes with width and height >= ``min_size`` px (original scale), aspect ratio
   max(w/h, h/w) <= ``max_aspect_ratio`` and sqrt(box area / image area) in ``area_range``
   (bounds included), as SoCo's ``filter_ratio_size``;
3. NMS at ``nms_thresh``. Selective search gives no scores: the order it returns (Uijlings et
   al.'s pseudo-random ranking by hierarchy level) is the score, so of two overlapping boxes the
   earlier one stays. That ranking uses C's ``rand()``; it is seeded per image (from ``seed`` and
   the image id) for outputs that do not depend on which worker ran the image;
4. the first ``topk`` boxes left.

Presets: ``soco`` (ratio 3, area 0.3-0.8, no NMS: SoCo's ``ratio3size0308`` filtering) and
``aligndet`` (ratio 3, area 0.0-0.8, NMS 0.5: the ``train2017_ratio3size0008@0.5.json`` of
AlignDet's pretraining config).

Resumable: each finished image is appended to ``<output stem>.partial.jsonl`` (kept after the run,
as the cache a rerun reads: images in it are not processed again). The final json is written
atomically. An unreadable image is logged, skipped and listed in the json's ``info``.
"""

import ctypes
import datetime
import hashlib
import json
import logging
import multiprocessing as mp
import os

import cv2
import numpy as np
import torch
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform
from detectron2.layers import nms
from detectron2.structures import Boxes

from .image_io import CorruptImageError, read_image

__all__ = [
    "PRESETS",
    "filter_proposals",
    "generate_proposals",
    "propose_image",
    "proposal_keep_mask",
    "selective_search",
    "stable_image_id",
]

logger = logging.getLogger(__name__)

# Filtering of the two papers' released proposal files (see the module docstring).
PRESETS = {
    "aligndet": dict(min_size=32, max_aspect_ratio=3.0, area_range=(0.0, 0.8), nms_thresh=0.5),
    "soco": dict(min_size=32, max_aspect_ratio=3.0, area_range=(0.3, 0.8), nms_thresh=None),
}
CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
_PARTIAL_FORMAT = 1
_LIBC = []  # [ctypes library or None], loaded once per process


def _seed_c_rand(seed):
    """Seed C's rand(), which OpenCV's selective search ranking draws from (no-op where absent)."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None).srand)
        except (OSError, AttributeError):
            _LIBC.append(None)
            logger.warning("Cannot seed C rand(): the selective search order is not reproducible.")
    if _LIBC[0] is not None:
        _LIBC[0](ctypes.c_uint(seed % 2**32))


def selective_search(image, *, resize=512, seed=0):
    """
    OpenCV's fast selective search on a resized copy of ``image``.

    Args:
        image (np.ndarray): HWC uint8 BGR image (H, W, 3).
        resize (int or None): the size the image is resized to fit (longer side = ``resize``);
            None or 0 searches the image as it is.
        seed (int): seed of the pseudo-random ranking.

    Returns:
        Tensor: (N, 4) float32 XYXY boxes in ``image``'s coordinates, in the order selective
        search ranks them.
    """
    h, w = image.shape[:2]
    new_h, new_w = (
        (h, w) if not resize else ResizeShortestEdge.get_output_shape(h, w, resize, resize)
    )
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if new_h * new_w < h * w else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image)
    search.switchToSelectiveSearchFast()
    _seed_c_rand(seed)
    rects = search.process().astype(np.float32).reshape(-1, 4)  # XYWH
    rects[:, 2:] += rects[:, :2]
    boxes = ResizeTransform(h, w, new_h, new_w).inverse().apply_box(rects)
    boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    boxes.clip((h, w))
    return boxes.tensor


def proposal_keep_mask(boxes, image_size, *, min_size=32, max_aspect_ratio=3.0, area_range=(0, 1)):
    """
    The size, shape and area filters of SoCo's ``filter_ratio_size``.

    Args:
        boxes (Tensor): (N, 4) XYXY boxes.
        image_size (tuple[int, int]): (height, width) of their image.
        min_size (float): smallest width and height kept.
        max_aspect_ratio (float or None): largest max(w/h, h/w) kept; None keeps any.
        area_range (tuple[float, float]): (lo, hi) of sqrt(box area / image area), bounds kept.

    Returns:
        Tensor: (N,) bool, True for the boxes kept.
    """
    wh = (boxes[:, 2:] - boxes[:, :2]).double()
    keep = (wh >= min_size).all(dim=1)
    if max_aspect_ratio is not None:
        ratio = wh.max(dim=1).values / wh.min(dim=1).values  # inf / nan for empty boxes: dropped
        keep &= ratio <= max_aspect_ratio
    rel_side = (wh.prod(dim=1) / (image_size[0] * image_size[1])).sqrt()
    return keep & (rel_side >= area_range[0]) & (rel_side <= area_range[1])


def filter_proposals(
    boxes,
    image_size,
    *,
    min_size=32,
    max_aspect_ratio=3.0,
    area_range=(0.0, 1.0),
    nms_thresh=None,
    topk=None,
):
    """
    Filter ranked proposals: :func:`proposal_keep_mask`, then NMS with the rank as the score (of
    two boxes with IoU > ``nms_thresh`` the earlier one stays), then the first ``topk``.

    Args:
        boxes (Tensor): (N, 4) XYXY boxes, best ranked first.
        image_size (tuple[int, int]): (height, width).
        min_size, max_aspect_ratio, area_range: see :func:`proposal_keep_mask`.
        nms_thresh (float or None): NMS IoU threshold; None skips NMS.
        topk (int or None): boxes kept at most; None keeps all.

    Returns:
        Tensor: (K,) int64 indices into ``boxes`` of the boxes kept, in rank order.
    """
    mask = proposal_keep_mask(
        boxes,
        image_size,
        min_size=min_size,
        max_aspect_ratio=max_aspect_ratio,
        area_range=area_range,
    )
    keep = mask.nonzero().flatten()
    if nms_thresh is not None and len(keep):
        rank_scores = torch.arange(len(keep), 0, -1, dtype=torch.float32)
        # nms returns indices by decreasing score, i.e. in rank order.
        keep = keep[nms(boxes[keep].float(), rank_scores, nms_thresh)]
    return keep[:topk] if topk is not None else keep


def propose_image(file_name, *, resize=512, seed=0, **filters):
    """
    Read an image, run :func:`selective_search` and :func:`filter_proposals`.

    Args:
        file_name (str): image path.
        resize (int or None), seed (int): see :func:`selective_search`.
        filters: keyword arguments of :func:`filter_proposals`.

    Returns:
        tuple[Tensor, tuple[int, int]]: (K, 4) XYXY boxes in rank order, and (height, width) of
        the image as Detectron2 reads it (EXIF orientation applied).

    Raises:
        CorruptImageError: the file cannot be read.
    """
    image = read_image(file_name, format="BGR")
    image_size = image.shape[:2]
    boxes = selective_search(image, resize=resize, seed=seed)
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
        (resize is None or resize >= 0, "resize", resize, "an int >= 0 (0: no resize)"),
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
    resize=512,
    min_size=32,
    max_aspect_ratio=3.0,
    area_range=(0.0, 0.8),
    nms_thresh=0.5,
    topk=None,
    workers=None,
    max_images=None,
    seed=0,
):
    """
    Selective search proposals for every image of a registered dataset (labels ignored), written
    as a one-category COCO json (see the module docstring). Resumes from ``output``'s partial file.

    Args:
        dataset_name (str): a name in Detectron2's ``DatasetCatalog``.
        output (str): the json to write.
        resize, seed: see :func:`selective_search`.
        min_size, max_aspect_ratio, area_range, nms_thresh, topk: see :func:`filter_proposals`
            (defaults: the ``aligndet`` preset).
        workers (int or None): processes; None uses ``os.cpu_count()``; 1 runs in this process.
        max_images (int or None): only the dataset's first ``max_images`` images.

    Returns:
        dict: ``output``, ``image_root`` (to register the json with), ``num_images``,
        ``num_proposals``, ``processed`` (images searched in this call), ``reused`` (from the
        partial file), ``skipped`` (list of "file: error" of unreadable images),
        ``images_without_proposals``.
    """
    area_range = tuple(float(x) for x in area_range)
    _check_params(resize, min_size, max_aspect_ratio, area_range, nms_thresh, topk)
    params = dict(resize=resize, min_size=min_size, max_aspect_ratio=max_aspect_ratio)
    params.update(area_range=area_range, nms_thresh=nms_thresh, topk=topk)
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
    with open(partial, "a") as f:
        results = _run(todo, workers)
        for record in tqdm.tqdm(results, total=len(todo), desc="selective search", unit="img"):
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
