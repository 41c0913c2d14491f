"""Pick the evaluator that matches a dataset's format."""

import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

logger = logging.getLogger(__name__)

_EVALUATORS = ("auto", "coco", "voc")


def evaluator_kind(dataset_name, requested="auto"):
    """
    Args:
        dataset_name (str): a registered dataset.
        requested (str): ``FINETUNE.EVALUATOR``: "auto", "coco" or "voc".

    Returns:
        str: "coco" or "voc".
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
    raise ValueError(
        f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r}: no detection evaluator "
        "applies. Register it as COCO json or VOC layout, or set FINETUNE.EVALUATOR."
    )


def build_evaluator(cfg, dataset_name, output_folder=None):
    """
    COCOEvaluator (bbox, plus segm when ``MODEL.MASK_ON``) for COCO-format data,
    PascalVOCDetectionEvaluator (AP, AP50, AP75 with the VOC07 11-point metric for year 2007)
    for VOC-format data.

    Args:
        cfg (CfgNode): the fine-tuning config.
        dataset_name (str): a registered test dataset.
        output_folder (str or None): where COCOEvaluator writes its predictions.

    Returns:
        DatasetEvaluator
    """
    kind = evaluator_kind(dataset_name, cfg.FINETUNE.EVALUATOR)
    if kind == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder)
    return PascalVOCDetectionEvaluator(dataset_name)
