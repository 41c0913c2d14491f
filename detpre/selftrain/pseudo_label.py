"""
Pseudo-labelling with a teacher detector: batched inference through Detectron2's test loader,
sharded across processes, written as a COCO json of hard boxes (and RLE masks) in the labeled
set's categories. The self-training recipe of Zoph et al., "Rethinking Pre-training and
Self-training", NeurIPS 2020.
"""

import json
import logging
import os
import shutil
import time

import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import build_model
from detectron2.utils import comm
from tqdm import tqdm

from ..checkpoint import DetpreCheckpointer
from ..checkpoint.checkpointer import atomic_write
from ..data.image_io import CorruptImageError
from ..data.mappers.finetune import RobustDatasetMapper
from ..engine.amp import autocast_dtype as amp_dtype
from .label_store import PartWriter, read_info, read_parts, write_coco_json

__all__ = [
    "PseudoLabelMapper",
    "autocast_dtype",
    "build_teacher",
    "coco_categories",
    "labeller_workers",
    "pseudo_label_dataset",
    "run_pseudo_labelling",
]

logger = logging.getLogger(__name__)


class PseudoLabelMapper(RobustDatasetMapper):
    """
    The inference mapper of the fine-tuning tools (test-time resize, ``height`` / ``width`` read
    from the file header when a dict lacks them), except that an unreadable image gives
    ``{"file_name": ..., "error": message}`` instead of raising: the labeller reports and skips
    it. (Returning None would make Detectron2's ``MapDataset`` map another image instead.)
    """

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except CorruptImageError as e:
            return {"file_name": dataset_dict["file_name"], "error": str(e)}


def coco_categories(metadata):
    """
    The categories of a labeled dataset with their original (dataset) ids.

    Args:
        metadata (Metadata): with ``thing_classes`` and, for COCO-json data,
            ``thing_dataset_id_to_contiguous_id``; without the latter (VOC) ids are 1..K.

    Returns:
        tuple[list[dict], dict[int, int]]: COCO ``categories`` ({"id", "name"}) in contiguous
        order, and the map contiguous id -> dataset id.
    """
    classes = metadata.get("thing_classes", None)
    if not classes:
        raise ValueError(f"Dataset {metadata.name!r} has no thing_classes: cannot name categories")
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        to_dataset_id = {v: k for k, v in mapping.items()}
    else:
        to_dataset_id = {i: i + 1 for i in range(len(classes))}
    categories = [{"id": to_dataset_id[i], "name": name} for i, name in enumerate(classes)]
    return categories, to_dataset_id


def autocast_dtype(precision):
    """
    Args:
        precision (str): ``SELF_TRAIN.PSEUDO_LABEL.PRECISION``.

    Returns:
        torch.dtype or None: the autocast dtype; None for float32 (no autocast).
    """
    return amp_dtype(precision, key="SELF_TRAIN.PSEUDO_LABEL.PRECISION", allow_float32=True)


def labeller_workers(cfg):
    """Data-loader workers of the pseudo-labeller: ``SELF_TRAIN.PSEUDO_LABEL.NUM_WORKERS``, or
    ``DATALOADER.NUM_WORKERS`` when that is -1."""
    workers = cfg.SELF_TRAIN.PSEUDO_LABEL.NUM_WORKERS
    return cfg.DATALOADER.NUM_WORKERS if workers < 0 else workers


def build_teacher(cfg):
    """
    The teacher: the config's model with ``MODEL.WEIGHTS`` loaded, in eval mode, whose test-time
    score threshold is ``SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH`` (no mask is computed for a box
    that will be dropped), its weights channels-last when ``SELF_TRAIN.PSEUDO_LABEL.CHANNELS_LAST``.

    Args:
        cfg (CfgNode): a config with detpre's keys.

    Returns:
        nn.Module
    """
    cfg = cfg.clone()
    cfg.defrost()
    autocast_dtype(cfg.SELF_TRAIN.PSEUDO_LABEL.PRECISION)  # a bad value fails before the build
    thresh = cfg.SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = thresh
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = thresh
    model = build_model(cfg)
    DetpreCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if cfg.SELF_TRAIN.PSEUDO_LABEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def _annotations(instances, to_dataset_id, score_thresh):
    """Hard COCO annotations (no "id") of the predictions scoring at least ``score_thresh``."""
    instances = instances[instances.scores >= score_thresh]
    anns = instances_to_coco_json(instances, img_id=None)
    for ann in anns:
        ann.pop("image_id")
        ann["category_id"] = to_dataset_id[ann["category_id"]]
        ann["iscrowd"] = 0
        if "segmentation" in ann:
            ann["area"] = float(mask_util.area(ann["segmentation"]))
        else:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    return anns


def _image_root(dicts, metadata):
    root = metadata.get("image_root", None)
    files = [os.path.abspath(d["file_name"]) for d in dicts]
    if root and all(f.startswith(os.path.abspath(root) + os.sep) for f in files):
        return os.path.abspath(root)
    return os.path.commonpath([os.path.dirname(f) for f in files])


def _inputs(dicts, max_images=0):
    """Dicts for the labeller: file_name, height / width when known, and a COCO integer id (the
    dataset's own when it is an int, else the 1-based position)."""
    dicts = dicts[:max_images] if max_images > 0 else dicts
    out = []
    for i, d in enumerate(dicts):
        image_id = d.get("image_id")
        item = {"file_name": d["file_name"]}
        item["image_id"] = image_id if isinstance(image_id, int) else i + 1
        item.update({k: d[k] for k in ("height", "width") if k in d})
        out.append(item)
    if len({d["image_id"] for d in out}) != len(out):
        raise ValueError("Duplicate image ids in the dataset to pseudo-label")
    return out


def pseudo_label_dataset(
    model,
    dataset_dicts,
    output_file,
    *,
    mapper,
    categories,
    to_dataset_id,
    image_root,
    score_thresh=0.5,
    batch_size=4,
    chunk_size=64,
    num_workers=0,
    precision="float32",
    info=None,
):
    """
    Label images with a teacher and write a COCO json: every image (those without a box too, as
    background), one annotation per prediction scoring at least ``score_thresh`` (box, RLE mask
    when the model predicts masks, category as a dataset id, and its ``score``).

    Every process must call it: Detectron2's ``InferenceSampler`` gives each its shard (of the
    images sorted by aspect ratio when their sizes are known, so that batches pad less). Results
    are appended to ``output_file + ".parts/"`` every ``chunk_size`` images; a rerun labels only
    the images not found there. An unreadable image is logged and listed in
    ``info["skipped_images"]``. The main process writes the json (atomically) at the end and
    removes the parts. An existing ``output_file`` is taken as done.

    Args:
        model (nn.Module): the teacher in eval mode; takes a list of mapped dicts and returns
            ``[{"instances": Instances}]`` at the original image size.
        dataset_dicts (list[dict]): images; ``file_name`` each, ``image_id``, ``height`` and
            ``width`` when known.
        output_file (str): the json to write.
        mapper (callable): dataset dict -> model input (``PseudoLabelMapper``).
        categories (list[dict]): COCO categories of the labeled set.
        to_dataset_id (dict[int, int]): contiguous class id -> category id.
        image_root (str): ``file_name`` in the json is relative to it when below it.
        score_thresh (float): hard threshold on the scores.
        batch_size (int): images per forward pass per process.
        chunk_size (int): images between flushes of the partial results.
        num_workers (int): data loader workers per process.
        precision (str): "float32", or "bfloat16" / "float16" to run the model under
            ``torch.autocast`` (see ``SELF_TRAIN.PSEUDO_LABEL.PRECISION``).
        info (dict or None): extra entries of the json's ``info``.

    Returns:
        dict: the json's ``info`` (with ``num_images``, ``num_annotations``, ``skipped_images``).
    """
    dtype = autocast_dtype(precision)
    if os.path.isfile(output_file):
        return comm.all_gather(read_info(output_file) if comm.is_main_process() else None)[0]
    parts_dir = output_file + ".parts"
    if comm.is_main_process():
        os.makedirs(parts_dir, exist_ok=True)
    comm.synchronize()
    done = read_parts(parts_dir)
    todo = [d for d in dataset_dicts if d["file_name"] not in done]
    comm.synchronize()  # every process has read the parts before any writes to them
    if done:
        logger.info(f"Resuming: {len(done)} images done, {len(todo)} to label -> {output_file}")

    if all("height" in d and "width" in d for d in todo):
        # Batches of like aspect ratios pad less (every process sorts the same list the same way).
        todo = sorted(todo, key=lambda d: d["width"] / d["height"])
    writer = PartWriter(parts_dir, chunk_size)
    if todo:
        loader = build_detection_test_loader(
            todo, mapper=mapper, batch_size=batch_size, num_workers=num_workers
        )
        bar = tqdm(
            total=len(loader.sampler),
            desc=os.path.basename(output_file),
            unit="img",
            disable=not comm.is_main_process(),
        )
        start = time.perf_counter()
        device_type = next((p.device.type for p in model.parameters()), "cpu")
        with torch.inference_mode(), torch.autocast(device_type, dtype, enabled=dtype is not None):
            for batch in loader:
                for bad in (b for b in batch if "error" in b):
                    logger.warning(f"Skipping unreadable image: {bad['error']}")
                    writer.add({"file_name": bad["file_name"], "error": bad["error"]})
                inputs = [b for b in batch if "error" not in b]
                outputs = model(inputs) if inputs else []
                for inp, out in zip(inputs, outputs):
                    instances = out["instances"].to("cpu")
                    image = {"id": inp["image_id"], "file_name": inp["file_name"]}
                    image.update(height=inp["height"], width=inp["width"])
                    anns = _annotations(instances, to_dataset_id, score_thresh)
                    writer.add({"file_name": inp["file_name"], "image": image, "annotations": anns})
                bar.update(len(batch))
        bar.close()
        seconds = time.perf_counter() - start
        logger.info(
            f"Labelled {len(loader.sampler)} images in {seconds:.1f}s on this process "
            f"({len(loader.sampler) / max(seconds, 1e-9):.2f} img/s)"
        )
    writer.flush()
    comm.synchronize()
    summary = None
    if comm.is_main_process():
        summary = write_coco_json(
            dataset_dicts, read_parts(parts_dir), output_file, categories, image_root, info
        )
        shutil.rmtree(parts_dir, ignore_errors=True)
    return comm.all_gather(summary)[0]  # the main process's, once it has written the json


def run_pseudo_labelling(cfg, model, output_dir):
    """
    Pseudo-label every dataset of ``SELF_TRAIN.UNLABELED_DATASETS`` with ``model``, in the
    categories of ``DATASETS.TRAIN[0]``, into ``output_dir/<dataset>.json``, and list them in
    ``output_dir/index.json`` (what the returned dict holds).

    Args:
        cfg (CfgNode): the self-training config.
        model (nn.Module): the teacher in eval mode (:func:`build_teacher`).
        output_dir (str): where the jsons go.

    Returns:
        dict[str, dict]: dataset name -> {"json_file", "image_root" (for DATASETS.REGISTER_COCO),
        "num_images", "num_annotations", "num_skipped"}.
    """
    names = list(cfg.SELF_TRAIN.UNLABELED_DATASETS)
    if not names:
        raise ValueError("SELF_TRAIN.UNLABELED_DATASETS is empty: name the datasets to label")
    if not cfg.DATASETS.TRAIN:
        raise ValueError("DATASETS.TRAIN is empty: its first dataset gives the categories")
    labeled = cfg.DATASETS.TRAIN[0]
    if not MetadataCatalog.get(labeled).get("thing_classes", None):
        DatasetCatalog.get(labeled)  # COCO json registered without metadata: loading sets it
    categories, to_dataset_id = coco_categories(MetadataCatalog.get(labeled))
    node = cfg.SELF_TRAIN.PSEUDO_LABEL
    mapper = PseudoLabelMapper(cfg, is_train=False)
    os.makedirs(output_dir, exist_ok=True)
    outputs = {}
    for name in names:
        dicts = _inputs(DatasetCatalog.get(name), node.MAX_IMAGES)
        output_file = os.path.join(output_dir, f"{name}.json")
        info = {
            "description": f"pseudo-labels of {name} by detpre",
            "source_dataset": name,
            "labeled_dataset": labeled,
            "teacher": cfg.MODEL.WEIGHTS,
            "score_thresh": node.SCORE_THRESH,
            "precision": node.PRECISION,
        }
        summary = pseudo_label_dataset(
            model,
            dicts,
            output_file,
            mapper=mapper,
            categories=categories,
            to_dataset_id=to_dataset_id,
            image_root=_image_root(dicts, MetadataCatalog.get(name)),
            score_thresh=node.SCORE_THRESH,
            batch_size=node.BATCH_SIZE,
            chunk_size=node.CHUNK_SIZE,
            num_workers=labeller_workers(cfg),
            precision=node.PRECISION,
            info=info,
        )
        logger.info(
            f"{name}: {summary['num_images']} images, {summary['num_annotations']} pseudo boxes "
            f"(score >= {node.SCORE_THRESH}), {len(summary['skipped_images'])} skipped"
        )
        outputs[name] = {
            "json_file": os.path.abspath(output_file),
            **{k: summary[k] for k in ("image_root", "num_images", "num_annotations")},
            "num_skipped": len(summary["skipped_images"]),
        }
    if comm.is_main_process():
        index = os.path.join(output_dir, "index.json")
        atomic_write(index, lambda f: f.write(json.dumps(outputs, indent=2).encode()))
    return outputs
