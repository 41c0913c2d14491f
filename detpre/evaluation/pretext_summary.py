"""
How far a pretraining run's pretext learned: its accuracy metric and total loss at the start and
the end of the run (from Detectron2's ``metrics.json``), beside the accuracy of a random guess.
"""

import json
import os

from detectron2.config import CfgNode

__all__ = ["chance_level", "pretext_summary", "queue_filled_at"]

# Detectron2's JSONWriter logs the median of the last 20 iterations of each smoothed scalar.
SMOOTHING_WINDOW = 20
# The pretext accuracy each meta-architecture logs (``[metric]`` keys of the EventStorage); a key
# ending in "*" is the mean over the keys it starts (InsLoc's levels).
ACCURACY_KEYS = {
    "MoCoV2": "[metric]moco/acc",
    "InsLoc": "[metric]insloc/acc*",
    "SlotCon": "[metric]slotcon/contrast_acc",
    "LOCA": "[metric]loca/position_acc",
    "AlignDet": "[metric]aligndet/acc",
    "AlignDetRetinaNet": "[metric]aligndet/acc",
}


def chance_level(cfg, last_metrics):
    """
    The top-1 accuracy of a random guess among a pretext's candidates.

    * InsLoc, MoCo-v2: 1 positive key among the ``SSL.QUEUE_SIZE`` negatives: 1 / (1 + Q);
    * LOCA: 1 / the cells of the reference grid, ``(REFERENCE_SIZE / stride)^2`` (196 at 224);
    * SlotCon: 1 / the teacher slots of a batch, ``SOLVER.IMS_PER_BATCH`` x the valid slots per
      view logged at the end (``slotcon/valid_slots``), per process;
    * AlignDet: about 1 / the RoIs of both views of a batch, 2 x ``ALIGNDET.ROIS_PER_IMAGE`` x
      ``SOLVER.IMS_PER_BATCH`` (an upper bound on the candidates: RoIs of the same proposal are
      not negatives).

    Args:
        cfg (CfgNode): the run's config (its ``config.yaml``).
        last_metrics (dict): the last ``metrics.json`` record of the run.

    Returns:
        float or None: None for a method without a known chance level.
    """
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch in ("MoCoV2", "InsLoc"):
        return 1.0 / (1 + cfg.SSL.QUEUE_SIZE)
    if arch == "LOCA":
        stride = (
            cfg.MODEL.VIT.PATCH_SIZE if cfg.MODEL.BACKBONE.NAME == "build_vitdet_backbone" else 16
        )
        return 1.0 / (cfg.LOCA.REFERENCE_SIZE // stride) ** 2
    if arch == "SlotCon" and "[metric]slotcon/valid_slots" in last_metrics:
        return 1.0 / (cfg.SOLVER.IMS_PER_BATCH * last_metrics["[metric]slotcon/valid_slots"])
    if arch in ("AlignDet", "AlignDetRetinaNet"):
        return 1.0 / (2 * cfg.ALIGNDET.ROIS_PER_IMAGE * cfg.SOLVER.IMS_PER_BATCH)
    return None


def queue_filled_at(cfg):
    """
    The iterations after which a queue method's negatives are all real keys: MoCo's queue starts
    as random unit vectors (easy negatives: the first losses are below the chance loss), replaced
    by ``SOLVER.IMS_PER_BATCH`` keys an iteration. 0 for methods without a queue.

    Args:
        cfg (CfgNode): the run's config.

    Returns:
        int: ``ceil(SSL.QUEUE_SIZE / SOLVER.IMS_PER_BATCH)`` for MoCo-v2 and InsLoc, else 0.
    """
    if cfg.MODEL.META_ARCHITECTURE not in ("MoCoV2", "InsLoc"):
        return 0
    return -(-cfg.SSL.QUEUE_SIZE // cfg.SOLVER.IMS_PER_BATCH)


def _measures_the_task(record, filled_at):
    """Whether most of the iterations behind a record's median had a full queue."""
    it = record.get("iteration", 0)
    window = min(SMOOTHING_WINDOW, it + 1)
    return it + 1 - filled_at > window / 2


def _value(record, key):
    if key.endswith("*"):
        values = [v for k, v in record.items() if k.startswith(key[:-1])]
        return sum(values) / len(values) if values else None
    return record.get(key)


def pretext_summary(output_dir):
    """
    Args:
        output_dir (str): a finished (or running) pretraining run's OUTPUT_DIR, with its
            ``config.yaml`` and ``metrics.json``.

    Returns:
        dict: ``metric`` (the key), ``acc_start`` / ``acc_end`` (first and last logged accuracy;
        for queue methods the first record whose median covers mostly iterations with a full
        queue, :func:`queue_filled_at`),
        ``chance`` (:func:`chance_level`), ``loss_start`` / ``loss_end`` (``total_loss``);
        values are None where the run logged nothing.
    """
    with open(os.path.join(output_dir, "config.yaml")) as f:
        cfg = CfgNode.load_cfg(f)
    key = ACCURACY_KEYS.get(cfg.MODEL.META_ARCHITECTURE)
    records = []
    metrics = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as f:
            records = [json.loads(line) for line in f if line.strip()]
    # The start is the first record most of whose median window had a full queue.
    filled_at = queue_filled_at(cfg)
    records = [r for r in records if _measures_the_task(r, filled_at)]
    logged = [r for r in records if key is not None and _value(r, key) is not None]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    return {
        "metric": key,
        "acc_start": _value(logged[0], key) if logged else None,
        "acc_end": _value(logged[-1], key) if logged else None,
        "chance": chance_level(cfg, logged[-1]) if logged else None,
        "loss_start": losses[0] if losses else None,
        "loss_end": losses[-1] if losses else None,
    }
