"""
Convert torchvision-style ResNet state dicts (public self-supervised releases: MoCo, DenseCL,
SlotCon, SoCo, ...) to Detectron2's ResNet names.

The default output follows MoCo's detection recipe (``moco/detection/convert-pretrain-to-detectron2.py``):
names relative to the ResNet (``stem.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut``, ...) that
Detectron2's checkpointer matches to the model by heuristics. ``target="c4"`` / ``"fpn"`` write the
exact names of a Mask/Faster R-CNN R50-C4 / R50-FPN instead, which load without heuristics.
"""

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "TARGETS",
    "ConversionReport",
    "convert_torchvision_resnet",
    "find_resnet_prefixes",
    "infer_target",
    "is_torchvision_resnet",
    "resnet_name",
    "to_detectron2_pickle",
    "unwrap_state_dict",
]

# None: MoCo's heuristic-matching names; "c4": R50-C4 (res5 in the ROI heads); "fpn": R50-FPN;
# "plain": a ResNet backbone alone (the dilated ResNet of configs/semseg).
TARGETS = (None, "c4", "fpn", "plain")
# Keys that hold the state dict inside a training checkpoint, in the order they are tried.
_WRAPPERS = ("state_dict", "model")
# A prefix naming one of these is a momentum / EMA copy; the online encoder is preferred over it.
_MOMENTUM_MARKERS = ("encoder_k", "momentum", "teacher", "target", "ema")
_BN = r"(weight|bias|running_mean|running_var)"
_RULES = (
    (re.compile(r"^conv1\.weight$"), lambda m: "stem.conv1.weight"),
    (re.compile(rf"^bn1\.{_BN}$"), lambda m: f"stem.conv1.norm.{m[1]}"),
    (
        re.compile(r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        re.compile(rf"^layer([1-4])\.(\d+)\.bn([1-3])\.{_BN}$"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (
        re.compile(r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    (
        re.compile(rf"^layer([1-4])\.(\d+)\.downsample\.1\.{_BN}$"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
)


def resnet_name(name: str) -> Optional[str]:
    """
    Args:
        name (str): a torchvision / mmdet ResNet key relative to the ResNet (``layer1.0.bn2.weight``).

    Returns:
        str or None: Detectron2's name relative to the ResNet (``res2.0.conv2.norm.weight``), None
        when the key is no ResNet layer's.
    """
    for pattern, rename in _RULES:
        m = pattern.match(name)
        if m:
            return rename(m)
    return None


@dataclass
class ConversionReport:
    """What :func:`convert_torchvision_resnet` did."""

    wrapper: str  # keys unwrapped to reach the state dict, e.g. "state_dict" ("" if none)
    prefix: str  # prefix stripped from the encoder's keys ("" if none)
    target: Optional[str]  # one of TARGETS
    converted: int  # tensors written
    dropped: Dict[str, List[str]] = field(default_factory=dict)  # reason -> original keys
    candidates: List[str] = field(default_factory=list)  # every ResNet prefix found

    def __str__(self):
        lines = [
            f"state dict under: {self.wrapper or '(top level)'}",
            f"encoder prefix: {self.prefix or '(none)'}"
            + (f" (found {self.candidates})" if len(self.candidates) > 1 else ""),
            f"target names: {self.target or 'heuristic matching (MoCo format)'}",
            f"converted: {self.converted} tensors",
        ]
        for reason, keys in self.dropped.items():
            lines.append(f"dropped ({reason}): {len(keys)} tensors, e.g. {keys[:3]}")
        return "\n".join(lines)


def _is_tensor(v):
    return isinstance(v, (torch.Tensor, np.ndarray))


def unwrap_state_dict(obj) -> Tuple[Mapping, str]:
    """
    Find the state dict inside a training checkpoint (``{"state_dict": ...}``, ``{"model": ...}``,
    nested as Detectron2's loader nests them).

    Args:
        obj (Mapping): what ``torch.load`` returned.

    Returns:
        (Mapping, str): the state dict (name -> tensor) and the wrapper keys, joined by "/".
    """
    path = []
    while isinstance(obj, Mapping) and not (obj and all(_is_tensor(v) for v in obj.values())):
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ValueError(
                "Checkpoint{} is not a state dict and has none of the keys {}; its keys: {}".format(
                    f" entry '{'/'.join(path)}'" if path else "", _WRAPPERS, sorted(obj)[:20]
                )
            )
        path.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"Checkpoint entry '{'/'.join(path)}' is a {type(obj)}, not a dict")
    return obj, "/".join(path)


def find_resnet_prefixes(state_dict: Mapping) -> List[str]:
    """
    Args:
        state_dict (Mapping): name -> tensor.

    Returns:
        list[str]: every prefix P for which ``P + "conv1.weight"``, ``P + "bn1.weight"`` and
        ``P + "layer1.0.conv1.weight"`` are keys, i.e. a torchvision ResNet lives under P.
    """
    suffix = "conv1.weight"
    prefixes = []
    for key in state_dict:
        if not key.endswith(suffix):
            continue
        p = key[: -len(suffix)]
        if (p == "" or p.endswith(".")) and all(
            p + k in state_dict for k in ("bn1.weight", "layer1.0.conv1.weight")
        ):
            prefixes.append(p)
    return prefixes


def is_torchvision_resnet(obj) -> bool:
    """
    Args:
        obj: a loaded checkpoint (any of the wrappers :func:`unwrap_state_dict` knows).

    Returns:
        bool: whether it holds a torchvision-style ResNet state dict (possibly prefixed).
    """
    try:
        state_dict, _ = unwrap_state_dict(obj)
    except ValueError:
        return False
    return bool(find_resnet_prefixes(state_dict))


def _choose_prefix(candidates: List[str], prefix: Optional[str]) -> str:
    if prefix is not None:
        if prefix not in candidates:
            raise ValueError(
                f"No torchvision ResNet under prefix '{prefix}'; ResNets found under {candidates}"
            )
        return prefix
    online = [p for p in candidates if not any(m in p for m in _MOMENTUM_MARKERS)]
    if len(candidates) == 1:
        return candidates[0]
    if len(online) == 1:
        return online[0]
    raise ValueError(
        f"Several ResNets in the checkpoint, under {candidates}; pass the prefix of the one "
        "to convert (e.g. 'module.encoder_k.' for a momentum teacher)"
    )


def _drop_reason(key: str, prefix: str, candidates: List[str]) -> Optional[str]:
    """Why a key is not converted, or None if it belongs to the encoder's ResNet."""
    other_encoder = any(len(c) > len(prefix) and key.startswith(c) for c in candidates)
    if key.startswith(prefix) and not other_encoder:
        rest = key[len(prefix) :]
        if rest.startswith("fc."):
            return "fc / MLP head"
        if rest.endswith("num_batches_tracked"):
            return "num_batches_tracked"
        return None
    if "queue" in key:
        return "queue"
    if any(m in key for m in _MOMENTUM_MARKERS):
        return "momentum encoder"
    if other_encoder:
        return "other encoder"
    return "projection head / other module"


def infer_target(model_keys) -> Optional[str]:
    """
    Args:
        model_keys (Iterable[str]): the state-dict keys of a Detectron2 model.

    Returns:
        str or None: "fpn" if the ResNet is ``backbone.bottom_up``, "c4" if it is split into
        ``backbone`` (stem, res2-4) and ``roi_heads.res5``, "plain" if it is ``backbone`` whole,
        None otherwise (heuristic matching).
    """
    keys = set(model_keys)
    if "backbone.bottom_up.stem.conv1.weight" in keys:
        return "fpn"
    if "backbone.stem.conv1.weight" in keys:
        return "c4" if "roi_heads.res5.0.conv1.weight" in keys else "plain"
    return None


def _target_name(name: str, target: Optional[str]) -> str:
    if target is None:
        return name
    if target == "fpn":
        return "backbone.bottom_up." + name
    if target == "plain":
        return "backbone." + name
    return ("roi_heads." if name.startswith("res5.") else "backbone.") + name


def convert_torchvision_resnet(
    state_dict, *, target: Optional[str] = None, prefix: Optional[str] = None
) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """
    Rename a torchvision-style ResNet (any depth) to Detectron2's names.

    The encoder is found by its keys (``P + "conv1.weight"``, ``P + "layer1.0.conv1.weight"``):
    plain torchvision, ``module.encoder_q.`` (MoCo), ``backbone.`` / ``encoder.`` /
    ``module.encoder.`` (DenseCL, SlotCon, SoCo), ... When several are found, the one whose prefix
    does not name a momentum / EMA copy (``encoder_k``, ``momentum``, ``teacher``, ...) is taken.
    ``fc.*`` (classifier or MoCo's MLP), ``num_batches_tracked`` and every key outside the encoder
    (projection heads, momentum encoder, queues) are dropped and listed in the report.

    Args:
        state_dict (Mapping): name -> tensor or ndarray, or a checkpoint wrapping one under
            "state_dict" / "model".
        target (str or None): None for MoCo's heuristic-matching names (``stem.conv1.weight``,
            ``res2.0.conv1.norm.weight``, ...); "c4" for ``backbone.stem/res2-4`` +
            ``roi_heads.res5``; "fpn" for ``backbone.bottom_up.*``; "plain" for ``backbone.*``.
        prefix (str or None): the encoder's prefix, to override the detection (e.g.
            "module.encoder_k." for SlotCon's teacher).

    Returns:
        (OrderedDict[str, Tensor], ConversionReport): the renamed tensors (the same objects, not
        copies) and what was done.
    """
    if target not in TARGETS:
        raise ValueError(f"Unknown target '{target}'; expected one of {TARGETS}")
    state_dict, wrapper = unwrap_state_dict(state_dict)
    candidates = find_resnet_prefixes(state_dict)
    if not candidates:
        raise ValueError(
            "No torchvision ResNet found: no key 'conv1.weight' (with any prefix) next to "
            f"'bn1.weight' and 'layer1.0.conv1.weight'; first keys: {list(state_dict)[:10]}"
        )
    prefix = _choose_prefix(candidates, prefix)
    converted = OrderedDict()
    dropped: Dict[str, List[str]] = {}
    for key, value in state_dict.items():
        reason = _drop_reason(key, prefix, candidates)
        if reason is not None:
            dropped.setdefault(reason, []).append(key)
            continue
        name = resnet_name(key[len(prefix) :])
        if name is None:
            raise ValueError(
                f"Cannot map '{key}' to a Detectron2 ResNet name (encoder prefix '{prefix}')"
            )
        converted[_target_name(name, target)] = value
    report = ConversionReport(wrapper, prefix, target, len(converted), dropped, candidates)
    return converted, report


def to_detectron2_pickle(
    d2_state: Mapping, target: Optional[str] = None, author: str = "detpre"
) -> dict:
    """
    Args:
        d2_state (Mapping): output of :func:`convert_torchvision_resnet`.
        target (str or None): the target it was converted for.
        author (str): the ``__author__`` Detectron2 logs when reading the file.

    Returns:
        dict: ``{"model": {name: ndarray}, "__author__", "matching_heuristics"}``, the .pkl format
        of MoCo's recipe; heuristic matching is on only for the heuristic-matching names.
    """
    model = OrderedDict(
        (k, v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in d2_state.items()
    )
    return {"model": model, "__author__": author, "matching_heuristics": target is None}
