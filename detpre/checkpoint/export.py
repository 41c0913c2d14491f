"""
Export of a pretraining model to a fine-tuning checkpoint with exactly Detectron2's keys.

The pretraining meta-architectures hold what they hand over under ``GeneralizedRCNN``'s names
(``backbone.*``, ``proposal_generator.*``, ``roi_heads.res5.*``, ``roi_heads.box_head.*``,
``roi_heads.box_predictor.*``) and everything pretraining-only elsewhere (``momentum.*``,
``queues.*``, ``ssl_head.*``). Export is a filter of the state dict by the keys of a
``GeneralizedRCNN`` built from the same config; no renaming table per method.
"""

import logging
import os
from collections import Counter, OrderedDict

import torch
from detectron2.modeling import build_model

from .checkpointer import DetpreCheckpointer, atomic_write
from .load_report import group_of

logger = logging.getLogger(__name__)

MOMENTUM_PREFIX = "momentum."


def detectron2_target_shapes(cfg):
    """
    The keys and shapes of the detector a pretraining config fine-tunes into
    (``SSL.EXPORT_META_ARCHITECTURE``: ``GeneralizedRCNN`` or ``RetinaNet``).

    Args:
        cfg (CfgNode): the pretraining config; its ``MODEL.*`` keys describe the detector.

    Returns:
        OrderedDict[str, torch.Size]
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = cfg.SSL.EXPORT_META_ARCHITECTURE
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    # SyncBN holds the same tensors as BN and needs no process group to be built.
    model = build_model(cfg)
    return OrderedDict((k, v.shape) for k, v in model.state_dict().items())


def export_state_dict(state_dict, target_shapes, source="online", excluded=()):
    """
    Keep the tensors of ``state_dict`` that ``GeneralizedRCNN`` has, under its names, except
    those the pretext does not train.

    Args:
        state_dict (dict[str, Tensor]): the pretraining model's state dict.
        target_shapes (dict[str, torch.Size]): from :func:`detectron2_target_shapes`.
        source (str): "online" exports the online (query / student) network; "momentum" exports
            the momentum (key / EMA teacher) copy, stored under ``momentum.<same name>``.
        excluded (tuple[str]): Detectron2 key prefixes the model holds but does not hand over (a
            model's ``export_excluded_prefixes``: layers its pretext does not train, as the FPN
            of MoCo-v2 on R50-FPN, or that its release does not transfer, as AlignDet's box
            regressor): left out, so that fine-tuning initialises them and its load report
            says so.

    Returns:
        tuple[OrderedDict[str, Tensor], dict]: the exported state dict and a report with
        ``exported`` (per-group counts), ``not_exported`` (pretraining-only and untrained
        keys), ``excluded`` (the Detectron2 keys left out by ``excluded``) and ``num_exported``.
        Keys whose shape differs from Detectron2's raise a ValueError.
    """
    if source not in ("online", "momentum"):
        raise ValueError(f"SSL.EXPORT must be 'online' or 'momentum', got {source!r}")
    prefix = MOMENTUM_PREFIX if source == "momentum" else ""
    exported, mismatched, left_out = OrderedDict(), [], []
    excluded = tuple(excluded)
    for key, shape in target_shapes.items():
        src_key = prefix + key
        if src_key not in state_dict:
            continue
        if excluded and key.startswith(excluded):
            left_out.append(key)
            continue
        tensor = state_dict[src_key]
        if tuple(tensor.shape) != tuple(shape):
            mismatched.append((src_key, tuple(tensor.shape), tuple(shape)))
            continue
        exported[key] = tensor.detach().cpu().clone()
    if mismatched:
        raise ValueError(
            "Pretrained tensors do not match Detectron2's shapes (the pretraining and fine-tuning "
            "configs describe different detectors): "
            + ", ".join(f"{k} {s} vs {t}" for k, s, t in mismatched[:10])
        )
    used = {prefix + k for k in exported}
    report = {
        "exported": dict(Counter(group_of(k) for k in exported)),
        "not_exported": sorted(k for k in state_dict if k not in used),
        "excluded": left_out,
        "num_exported": len(exported),
    }
    return exported, report


def save_finetune_checkpoint(state_dict, path, extra=None):
    """
    Write ``{"model": state_dict, "__author__": "detpre", "matching_heuristics": False}`` so that
    Detectron2's checkpointer loads it with exact names.

    Args:
        state_dict (dict[str, Tensor]): from :func:`export_state_dict`.
        path (str): output ``.pth`` file, written atomically.
        extra (dict or None): more entries to store (for example the pretraining iteration).
    """
    data = {"model": state_dict, "__author__": "detpre", "matching_heuristics": False}
    data.update(extra or {})
    atomic_write(path, lambda f: torch.save(data, f))


def format_export_report(report):
    lines = [f"exported {report['num_exported']} tensors:"]
    lines += [f"  {group}: {n}" for group, n in sorted(report["exported"].items())]
    kept_out = Counter(k.split(".")[0] for k in report["not_exported"])
    lines.append(
        "kept out (pretraining only): " + ", ".join(f"{k}.* {n}" for k, n in kept_out.items())
    )
    if report.get("excluded"):
        left_out = Counter(group_of(k) for k in report["excluded"])
        lines.append(
            "kept out by the method (untrained, or not transferred; fine-tuning initialises "
            "them): " + ", ".join(f"{k} {n}" for k, n in sorted(left_out.items()))
        )
    return "\n".join(lines)


class FinetuneExporter:
    """
    Turns a pretraining model's state dict into a fine-tuning checkpoint; the target key set is
    computed once from the config.
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (CfgNode): the pretraining config (``SSL.EXPORT`` picks the copy).
        """
        self.source = cfg.SSL.EXPORT
        self.target_shapes = detectron2_target_shapes(cfg)

    def __call__(self, state_dict, path, extra=None, excluded=()):
        """
        Args:
            state_dict (dict[str, Tensor]): the pretraining model's state dict.
            path (str): where to write the fine-tuning checkpoint.
            extra (dict or None): more entries to store.
            excluded (tuple[str]): see :func:`export_state_dict`.

        Returns:
            dict: the export report.
        """
        exported, report = export_state_dict(state_dict, self.target_shapes, self.source, excluded)
        save_finetune_checkpoint(exported, path, extra)
        logger.info("Fine-tuning checkpoint %s: %s", path, format_export_report(report))
        return report


class ExportingCheckpointer(DetpreCheckpointer):
    """
    A :class:`DetpreCheckpointer` that writes, beside every full checkpoint ``NAME.pth``, the
    fine-tuning checkpoint ``NAME_d2.pth`` (Detectron2's keys only). ``last_checkpoint`` keeps
    naming the full checkpoint, which ``--resume`` needs.
    """

    def __init__(self, model, save_dir="", *, exporter=None, **kwargs):
        """
        Args:
            model, save_dir, kwargs: as for :class:`DetpreCheckpointer`.
            exporter (FinetuneExporter or None): None saves full checkpoints only.
        """
        super().__init__(model, save_dir, **kwargs)
        self.exporter = exporter

    def save(self, name, **kwargs):
        super().save(name, **kwargs)
        if self.exporter is not None and self.save_dir and self.save_to_disk:
            path = os.path.join(self.save_dir, f"{name}_d2.pth")
            # fvcore's Checkpointer holds the model unwrapped from DDP.
            self.exporter(
                self.model.state_dict(),
                path,
                {"iteration": kwargs.get("iteration")},
                excluded=getattr(self.model, "export_excluded_prefixes", ()),
            )
