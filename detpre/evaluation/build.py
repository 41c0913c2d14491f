"""Pick the evaluator that matches a dataset's format."""

import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

from .sem_seg import DetpreSemSegEvaluator

logger = logging.getLogger(__name__)

_EVALUATORS = ("auto", "coco", "voc", "sem_seg")


def evaluator_kind(dataset_name, requested="auto"):
    """
    Args:
        dataset_name (str): a registered dataset.
        requested (str): ``FINETUNE.EVALUATOR``: "auto", "coco", "voc" or "sem_seg".

    Returns:
        str: "coco", "voc" or "sem_seg".
    """
    if requested not in _EVALUATORS:
        raise ValueError(f"FINETUNE.EVALUATOR must be one of {_EVALUATORS}, got {requested!r}")
    if requested != "auto":
        return requested
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        return "coco"
    if evaluator_type == "pascal_voc":
        return "voc"
    if evaluator_type in ("sem_seg", "cityscapes_sem_seg"):
        return "sem_seg"
    raise ValueError(
        f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r}: no evaluator applies. "
        "Register it as COCO json, VOC layout or semantic segmentation, or set "
        "FINETUNE.EVALUATOR."
    )


def build_evaluator(cfg, dataset_name, output_folder=None):
    """
    COCOEvaluator (bbox, plus segm when ``MODEL.MASK_ON``) for COCO-format data,
    PascalVOCDetectionEvaluator (AP, AP50, AP75 with the VOC07 11-point metric for year 2007)
    for VOC-format data, DetpreSemSegEvaluator (mIoU, fwIoU, mACC, pACC, per-class IoU / ACC)
    for semantic-segmentation data.

    Args:
        cfg (CfgNode): the fine-tuning config.
        dataset_name (str): a registered test dataset.
        output_folder (str or None): where COCOEvaluator / SemSegEvaluator write their predictions.

    Returns:
        DatasetEvaluator
    """
    kind = evaluator_kind(dataset_name, cfg.FINETUNE.EVALUATOR)
    if kind == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder)
    if kind == "sem_seg":
        return DetpreSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
    return PascalVOCDetectionEvaluator(dataset_name)
