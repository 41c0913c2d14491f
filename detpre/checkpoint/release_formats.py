"""
The public releases' checkpoint formats, recognised by their keys, and their conversion to the
exact names of a Detectron2 detector (``tools/convert_pretrained.py``):

=============  ==========================================  ==============================  ========
format         recognised by                               converted                       copy
=============  ==========================================  ==============================  ========
torchvision    a ResNet ``conv1`` / ``bn1`` / ``layer1``   the ResNet                      online
               under any prefix (MoCo, DenseCL, ...)
slotcon        ``module.encoder_k.`` with ``grouping_k``   the teacher (or student) ResNet  teacher
insloc         mmdet ``backbone.`` + ``neck.`` /            ResNet, FPN, 4conv1fc box head  query
               ``roi_head.`` with key copies ``*_k.``      (C4: stem..res4 + res5)
aligndet       mmdet ``backbone.`` + ``rpn_head.`` or       ResNet, FPN, RPN, box head; or  online
               RetinaNet's ``bbox_head.cls_convs``         RetinaNet's FPN and subnets
loca           a Flax (msgpack) tree with                  ViT-B/16 -> ViTDet              teacher
               ``ToTokenSequence_0/embedding/kernel``      ``backbone.net.*``
detectron2     Detectron2 detector names (an already       passed through                  as is
               converted release, e.g. InsLoc's .pkl)
=============  ==========================================  ==============================  ========
"""

import pickle
from typing import Optional

import torch

from .convert import (
    ConversionReport,
    convert_torchvision_resnet,
    is_torchvision_resnet,
    unwrap_state_dict,
)
from .flax_msgpack import flatten_tree, restore_flax_bytes
from .mmdet_convert import convert_mmdet_detector, is_mmdet_detector
from .vit_convert import convert_loca_vit, find_vit_prefixes

__all__ = [
    "COPIES",
    "FORMATS",
    "convert_release",
    "detect_format",
    "drop_biases_under_norms",
    "load_release",
    "target_of",
]

FORMATS = ("torchvision", "slotcon", "insloc", "aligndet", "loca", "detectron2")
# Detectron2 detector names: a release already converted (InsLoc's Drive files are its converter's
# .pkl) passes through, so that the tool still loads it and prints the load table.
_D2_PREFIXES = (
    "backbone.bottom_up.",
    "backbone.stem.",
    "backbone.net.",
    "backbone.res",
    "roi_heads.",
)
# The copies each format can give, its release's transfer first (the default).
COPIES = {
    "torchvision": ("online",),
    "slotcon": ("teacher", "student"),
    "insloc": ("query", "key"),
    "aligndet": ("online",),
    "loca": ("teacher", "student"),
    "detectron2": ("online",),
}
_SLOTCON_PREFIXES = {"teacher": "module.encoder_k.", "student": "module.encoder_q."}


def load_release(path: str, trust_pickle: bool = False):
    """
    Args:
        path (str): a ``.pth`` / ``.pth.tar`` / ``.pkl`` (PyTorch or pickle) or a Flax msgpack
            checkpoint.
        trust_pickle (bool): let ``torch.load`` unpickle Python objects (SlotCon's checkpoints
            hold an ``argparse.Namespace``); only for files from a trusted source.

    Returns:
        dict: the checkpoint (a Flax tree of NumPy arrays for msgpack files).
    """
    with open(path, "rb") as f:
        head = f.read(1)
    # A msgpack map starts with 0x80-0x8f, 0xde or 0xdf; zip (torch) with "P", pickle with 0x80.
    if head and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        with open(path, "rb") as f:
            return restore_flax_bytes(f.read())
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds Python objects besides tensors (e.g. SlotCon's argparse options); if "
            f"you trust its source, rerun with --trust-pickle.\n{e}"
        ) from e


def detect_format(obj) -> str:
    """
    Args:
        obj (dict): a loaded checkpoint (:func:`load_release`).

    Returns:
        str: one of :data:`FORMATS`.

    Raises:
        ValueError: no format matches; the message lists the first keys.
    """
    if find_vit_prefixes(flatten_tree(obj)):
        return "loca"
    try:
        state_dict, _ = unwrap_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"Unknown checkpoint layout: {e}") from e
    keys = list(state_dict)
    if is_mmdet_detector(state_dict):
        insloc = any(k.startswith(("backbone_k.", "neck_k.", "roi_head_k.")) or "queue" in k
                     for k in keys)  # fmt: skip
        aligndet = any(
            k.startswith(("rpn_head.", "backbone.backbone.", "bbox_head.cls_convs")) for k in keys
        )
        if insloc or not aligndet:
            return "insloc"
        return "aligndet"
    if "module.encoder_k.conv1.weight" in state_dict and any("grouping_k." in k for k in keys):
        return "slotcon"
    if is_torchvision_resnet(state_dict):
        return "torchvision"
    if keys and any(k.startswith(_D2_PREFIXES) for k in keys):
        return "detectron2"
    raise ValueError(
        "Unknown checkpoint layout: not a torchvision ResNet, an mmdet detector (InsLoc, "
        f"AlignDet), SlotCon or a LOCA Flax tree; first keys: {keys[:12]}"
    )


def target_of(model_keys) -> Optional[str]:
    """
    Args:
        model_keys (Iterable[str]): a Detectron2 detector's state-dict keys.

    Returns:
        str or None: "vit", "retinanet", "fpn" or "c4", None when none applies.
    """
    keys = set(model_keys)
    if "backbone.net.patch_embed.proj.weight" in keys:
        return "vit"
    if "head.cls_subnet.0.weight" in keys:
        return "retinanet"
    if "backbone.bottom_up.stem.conv1.weight" in keys:
        return "fpn"
    if "backbone.stem.conv1.weight" in keys and "roi_heads.res5.0.conv1.weight" in keys:
        return "c4"
    return None


def drop_biases_under_norms(state_dict, model_keys, report):
    """
    Drop the conv biases a checkpoint pretrained without a norm carries where the fine-tuning
    detector's conv has a norm and no bias (AlignDet's FPN, which its own fine-tuning, with a
    SyncBN neck, drops the same way), and list them in the report.

    Args:
        state_dict (dict): converted Detectron2 names -> tensors, changed in place.
        model_keys (Iterable[str]): the fine-tuning detector's state-dict keys.
        report (ConversionReport): gets the dropped keys.
    """
    keys = set(model_keys)
    for k in [k for k in state_dict if k.endswith(".bias") and k not in keys]:
        if k[: -len(".bias")] + ".norm.weight" in keys:
            del state_dict[k]
            report.dropped.setdefault("conv bias where fine-tuning has a norm", []).append(k)
            report.converted -= 1


def convert_release(obj, fmt="auto", *, target, copy=None, prefix=None, vit=None, model_keys=None):
    """
    Convert a loaded release checkpoint to a Detectron2 detector's exact names.

    Args:
        obj (dict): the checkpoint (:func:`load_release`).
        fmt (str): one of :data:`FORMATS`, or "auto" (:func:`detect_format`).
        target (str): the detector: "fpn", "c4", "retinanet" or "vit" (:func:`target_of`).
        copy (str or None): one of ``COPIES[fmt]``; None takes the release's transfer.
        prefix (str or None): the encoder's key prefix, overriding ``copy`` (torchvision, loca).
        vit (dict or None): ``{"cls_token": bool, "grid": int}`` of the ViTDet to fill (loca).
        model_keys (Iterable[str] or None): the fine-tuning detector's keys, to drop what it
            cannot hold by design (:func:`drop_biases_under_norms`).

    Returns:
        tuple: ``(state_dict, report, fmt, copy)``.
    """
    fmt = detect_format(obj) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; expected one of {FORMATS} or 'auto'")
    copy = copy or COPIES[fmt][0]
    if copy not in COPIES[fmt]:
        raise ValueError(f"A {fmt} checkpoint gives the copies {COPIES[fmt]}, not {copy!r}")
    if fmt == "loca":
        if target != "vit":
            raise ValueError(f"LOCA's release is a ViT: fine-tune a ViTDet (got target {target})")
        vit = vit or {}
        state, report = convert_loca_vit(obj, copy=copy, prefix=prefix, **vit)
    elif fmt in ("insloc", "aligndet"):
        if target not in ("fpn", "c4", "retinanet"):
            raise ValueError(f"A {fmt} checkpoint converts to an R50 detector, not {target}")
        state, report = convert_mmdet_detector(obj, target=target, copy=copy)
    elif fmt == "detectron2":
        state_dict, wrapper = unwrap_state_dict(obj)
        state = {k: torch.as_tensor(v) for k, v in state_dict.items()}
        report = ConversionReport(wrapper, "", target, len(state), {}, [])
    else:
        if target not in ("fpn", "c4", None):
            raise ValueError(f"A {fmt} ResNet converts to R50-FPN / C4, not {target}")
        if fmt == "slotcon" and prefix is None:
            prefix = _SLOTCON_PREFIXES[copy]
        state, report = convert_torchvision_resnet(obj, target=target, prefix=prefix)
    if model_keys is not None:
        drop_biases_under_norms(state, model_keys, report)
    return state, report, fmt, copy
