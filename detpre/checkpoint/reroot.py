"""
Moving a ResNet between the places Detectron2 models keep it, so that one exported checkpoint
loads into detectors and segmentors alike:

- "fpn": ``backbone.bottom_up.{stem,res2..res5}`` (R50-FPN detectors, Semantic FPN);
- "c4": ``backbone.{stem,res2..res4}`` and ``roi_heads.res5`` (R50-C4 detectors);
- "plain": ``backbone.{stem,res2..res5}`` (a ResNet backbone alone: FCN's dilated ResNet).
"""

import re
from collections import Counter, OrderedDict

__all__ = ["LAYOUTS", "resnet_layout", "reroot_resnet"]

LAYOUTS = ("fpn", "c4", "plain")
# The ResNet's own tensors: the stem and the numbered blocks of res2-res5 (not, e.g., the extra
# norm Res5ROIHeadsExtraNorm keeps at roi_heads.res5.norm, a head's).
_RESNET_PART = re.compile(r"^(stem\.|res[2-5]\.\d+\.)")


def resnet_layout(keys):
    """
    Args:
        keys (Iterable[str]): state-dict keys of a model or checkpoint.

    Returns:
        str or None: where its ResNet is (one of :data:`LAYOUTS`), None when it holds none.
    """
    keys = set(keys)
    if any(k.startswith("backbone.bottom_up.stem.") for k in keys):
        return "fpn"
    if any(k.startswith("backbone.stem.") for k in keys):
        if any(k.startswith("roi_heads.res5.") for k in keys):
            return "c4"
        return "plain"
    return None


def _resnet_name(key, layout):
    """The key relative to the ResNet (``res2.0.conv1.weight``), or None if not the ResNet's."""
    prefixes = {"fpn": ("backbone.bottom_up.",), "plain": ("backbone.",)}.get(
        layout, ("backbone.", "roi_heads.")
    )
    for prefix in prefixes:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if _RESNET_PART.match(rest) and (prefix != "roi_heads." or rest.startswith("res5.")):
                return rest
    return None


def _target_key(name, layout):
    if layout == "fpn":
        return "backbone.bottom_up." + name
    if layout == "c4" and name.startswith("res5."):
        return "roi_heads." + name
    return "backbone." + name


def reroot_resnet(state_dict, target_layout):
    """
    Rename a checkpoint's ResNet tensors to the layout of the model that loads it; every other key
    (FPN, heads, ...) is kept as it is, for the load report to count as unused.

    Args:
        state_dict (Mapping[str, Tensor]): the checkpoint's model state.
        target_layout (str): the model's layout (:func:`resnet_layout` of its keys).

    Returns:
        (OrderedDict, str or None): the renamed state dict (the same tensors) and a one-line
        description of the move, None when nothing moved.
    """
    source = resnet_layout(state_dict.keys())
    if source is None or target_layout is None or source == target_layout:
        return state_dict, None
    out, moved = OrderedDict(), Counter()
    for key, value in state_dict.items():
        name = _resnet_name(key, source)
        if name is None:
            out[key] = value
            continue
        new_key = _target_key(name, target_layout)
        moved[name.split(".")[0]] += 1
        out[new_key] = value
    stages = ", ".join(f"{k} {v}" for k, v in sorted(moved.items()))
    return out, f"ResNet moved from the {source} layout to the {target_layout} layout ({stages})"
