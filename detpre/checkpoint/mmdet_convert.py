"""
Convert mmdet-style detector checkpoints to Detectron2's names: InsLoc's release
(limbo0000/InstanceLoc: OpenSelfSup / mmdet 2.1, query and key branches) and AlignDet's (liming-ai/
AlignDet: mmdet 2.25 Faster R-CNN / RetinaNet), as their own converters map them
(InstanceLoc ``transfer/detection/convert_pretrained.py``; AlignDet
``tools/model_converters/extract_detector_weights.py`` followed by mmdet's names):

======================================================  ==========================================
mmdet                                                   Detectron2
======================================================  ==========================================
``backbone.`` ResNet (``conv1``, ``bn1``, ``layer1-4``)  ``backbone.bottom_up.`` (FPN) or
                                                        ``backbone.`` + ``roi_heads.res5`` (C4)
``roi_head.shared_head.layer4`` (C4)                    ``roi_heads.res5``
``neck.lateral_convs.<i>.conv`` (``.bn``)               ``backbone.fpn_lateral<i + first>`` (
                                                        ``.norm``); first level 2, or 3 (RetinaNet)
``neck.fpn_convs.<i>.conv``                             ``backbone.fpn_output<i + first>``;
                                                        RetinaNet's extra ones ``top_block.p6/p7``
``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``       ``proposal_generator.rpn_head.conv`` /
                                                        ``objectness_logits`` / ``anchor_deltas``
``roi_head.bbox_head.shared_convs.<i>.conv`` (``.bn``)  ``roi_heads.box_head.conv<i + 1>``
                                                        (``.norm``)
``roi_head.bbox_head.shared_fcs.0``                     ``roi_heads.box_head.fc1``
``bbox_head.cls_convs.<k>.conv`` / ``reg_convs``        ``head.cls_subnet.<2k>`` / ``bbox_subnet``
======================================================  ==========================================

Dropped, as the releases' converters drop them: the classifiers and regressors (``fc_cls``,
``fc_reg``, ``retina_cls``, ``retina_reg``: AlignDet's projectors live there, InsLoc's embedding
is ``fc_cls``), InsLoc's second fc (``shared_fcs.1``: Detectron2's 4conv1fc head has one), the key
/ target copies, queues and ``num_batches_tracked``. Anchor channels of the RPN are permuted from
mmdet's per-location order (ratio-major) to Detectron2's (size-major)
(:func:`anchor_permutation`), the identity with one size per level.
"""

import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch

from .convert import ConversionReport, find_resnet_prefixes, resnet_name, unwrap_state_dict

__all__ = ["anchor_permutation", "convert_mmdet_detector", "is_mmdet_detector"]

_NORM = r"(weight|bias|running_mean|running_var)"


def anchor_permutation(num_sizes: int, num_ratios: int) -> List[int]:
    """
    The per-location anchor order of mmdet's ``AnchorGenerator`` (``i = ratio * S + size``)
    mapped to Detectron2's ``DefaultAnchorGenerator`` (``j = size * R + ratio``).

    Args:
        num_sizes (int): S, sizes (scales) per location.
        num_ratios (int): R, aspect ratios per location.

    Returns:
        list[int]: ``perm`` with Detectron2's anchor j = mmdet's anchor ``perm[j]``.
    """
    return [r * num_sizes + s for s in range(num_sizes) for r in range(num_ratios)]


def _permute_anchors(t: torch.Tensor, perm: List[int]) -> torch.Tensor:
    """Permute the (A * K, ...) output channels of an anchor head, anchor-major."""
    a = len(perm)
    if t.shape[0] % a:
        raise ValueError(f"{t.shape[0]} channels do not split into {a} anchors")
    return t.reshape(a, t.shape[0] // a, *t.shape[1:])[perm].reshape(t.shape)


def is_mmdet_detector(state_dict: Mapping) -> bool:
    """Whether the keys are an mmdet detector's (a ResNet under ``backbone.`` and a neck or an
    RoI head), raw or extracted."""
    keys = set(state_dict)
    return ("backbone.conv1.weight" in keys or "backbone.backbone.conv1.weight" in keys) and any(
        k.startswith(("neck.", "roi_head.", "backbone.neck.", "backbone.roi_head.")) for k in keys
    )


def _source_prefixes(state_dict, copy):
    """The key prefixes of the branch to convert: (backbone, neck, rpn, roi, dense head)."""
    if "backbone.backbone.conv1.weight" in state_dict:  # AlignDet before extraction
        return (
            "backbone.backbone.",
            "backbone.neck.",
            "backbone.rpn_head.",
            "backbone.roi_head.",
            ("backbone.bbox_head."),
        )
    suffix = "_k" if copy == "key" else ""
    if copy == "key" and "backbone_k.conv1.weight" not in state_dict:
        raise ValueError("The checkpoint has no key encoder (backbone_k.*) to convert")
    return (
        f"backbone{suffix}.",
        f"neck{suffix}.",
        f"rpn_head{suffix}.",
        f"roi_head{suffix}.",
        f"bbox_head{suffix}.",
    )


def convert_mmdet_detector(
    obj,
    *,
    target: str,
    copy: str = "query",
    rpn_anchors: Tuple[int, int] = (1, 3),
) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """
    Args:
        obj: an mmdet checkpoint (``{"state_dict": ...}``, ``{"model": ...}`` or the state dict).
        target (str): "fpn" (Faster / Mask R-CNN R50-FPN), "c4" (R50-C4) or "retinanet".
        copy (str): InsLoc's "query" (``backbone.*``, as its converter) or "key"
            (``backbone_k.*``) branch; AlignDet's online detector either way.
        rpn_anchors (tuple[int, int]): (sizes, ratios) per location of the RPN's anchors.

    Returns:
        (OrderedDict[str, Tensor], ConversionReport)
    """
    if target not in ("fpn", "c4", "retinanet"):
        raise ValueError(f"target must be 'fpn', 'c4' or 'retinanet', got {target!r}")
    state_dict, wrapper = unwrap_state_dict(obj)
    if not is_mmdet_detector(state_dict):
        raise ValueError(
            "Not an mmdet detector: no 'backbone.conv1.weight' with a 'neck.' or 'roi_head.' "
            f"beside it; first keys: {list(state_dict)[:10]}"
        )
    bb, neck, rpn, roi, dense = _source_prefixes(state_dict, copy)
    first = 3 if target == "retinanet" else 2
    rpn_perm = anchor_permutation(*rpn_anchors)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    dropped: Dict[str, List[str]] = {}
    unknown = []

    def drop(reason, key):
        dropped.setdefault(reason, []).append(key)

    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            drop("num_batches_tracked", key)
            continue
        if key.startswith(bb):
            name = key[len(bb) :]
            if name.startswith("fc."):
                drop("classifier", key)
                continue
            d2 = resnet_name(name)
            if d2 is None:
                unknown.append(key)
            elif target == "c4":
                out[("roi_heads." if d2.startswith("res5.") else "backbone.") + d2] = value
            else:
                out["backbone.bottom_up." + d2] = value
            continue
        if key.startswith(roi + "shared_head.layer4."):  # C4's res5
            d2 = resnet_name("layer4." + key[len(roi + "shared_head.layer4.") :])
            if d2 is None:
                unknown.append(key)
            else:
                out["roi_heads." + d2] = value
            continue
        if key.startswith(neck):
            name = key[len(neck) :]
            m = re.match(rf"^(lateral|fpn)_convs\.(\d+)\.(conv|bn|gn)\.({_NORM[1:-1]})$", name)
            if m is None:
                unknown.append(key)
                continue
            kind, i, layer, leaf = m[1], int(m[2]), m[3], m[4]
            level = i + first
            if target == "retinanet" and kind == "fpn" and level > 5:
                base = f"backbone.top_block.p{level}"  # P6, P7 on C5
            else:
                base = f"backbone.fpn_{'lateral' if kind == 'lateral' else 'output'}{level}"
            out[f"{base}.{leaf}" if layer == "conv" else f"{base}.norm.{leaf}"] = value
            continue
        if key.startswith(rpn):
            name = key[len(rpn) :]
            m = re.match(r"^rpn_(conv|cls|reg)\.(weight|bias)$", name)
            if m is None:
                unknown.append(key)
                continue
            d2 = {"conv": "conv", "cls": "objectness_logits", "reg": "anchor_deltas"}[m[1]]
            if m[1] != "conv":
                value = _permute_anchors(value, rpn_perm)
            out[f"proposal_generator.rpn_head.{d2}.{m[2]}"] = value
            continue
        if key.startswith(roi + "bbox_head."):
            name = key[len(roi + "bbox_head.") :]
            m = re.match(rf"^shared_convs\.(\d+)\.(conv|bn|gn)\.({_NORM[1:-1]})$", name)
            if m:
                base = f"roi_heads.box_head.conv{int(m[1]) + 1}"
                out[f"{base}.{m[3]}" if m[2] == "conv" else f"{base}.norm.{m[3]}"] = value
            elif re.match(r"^shared_fcs\.0\.(weight|bias)$", name):
                out["roi_heads.box_head.fc1." + name.split(".")[-1]] = value
            elif name.startswith("shared_fcs."):
                drop("fc beyond the 4conv1fc head's one", key)
            elif name.startswith(("fc_cls.", "fc_reg.")):
                drop("classifier / regressor (projector)", key)
            else:
                unknown.append(key)
            continue
        if key.startswith(dense):
            name = key[len(dense) :]
            m = re.match(r"^(cls|reg)_convs\.(\d+)\.conv\.(weight|bias)$", name)
            if m:
                sub = "cls_subnet" if m[1] == "cls" else "bbox_subnet"
                out[f"head.{sub}.{2 * int(m[2])}.{m[3]}"] = value
            elif name.startswith(("retina_cls.", "retina_reg.")):
                drop("classifier / regressor (projector)", key)
            else:
                unknown.append(key)
            continue
        if "queue" in key:
            drop("queue", key)
        elif re.match(r"^(backbone|neck|roi_head|rpn_head|bbox_head)_k\.", key) or key.startswith(
            ("target_", "online_", "momentum")
        ):
            drop("other copy (key / target / online alias)", key)
        else:
            drop("projection head / other module", key)
    if unknown:
        raise ValueError(f"Cannot place these mmdet keys in Detectron2's detector: {unknown[:10]}")
    if not out:
        raise ValueError("Nothing converted: the checkpoint's detector branch is empty")
    candidates = find_resnet_prefixes(state_dict)
    return out, ConversionReport(wrapper, bb, target, len(out), dropped, candidates)
