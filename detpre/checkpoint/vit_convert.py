"""
Convert LOCA's released ViT (google-research/scenic ``projects/loca/vit.py``, a Flax tree) to the
names and layouts of Detectron2's ViTDet ViT (``backbone.net.*``).

Flax layouts and their Detectron2 counterparts:

* ``ToTokenSequence_0/embedding/kernel`` (16, 16, 3, D), HWIO -> ``patch_embed.proj.weight``
  (D, 3, 16, 16), OIHW;
* ``ToTokenSequence_0/posembed_input`` (1, 14, 14, D), no class token -> ``pos_embed``
  (1, 1 + 14 * 14, D) with a zero class-token row (ViTDet drops that row in ``get_abs_pos``) when
  the ViT is built with ``PRETRAIN_USE_CLS_TOKEN``, resized (bicubic, as ``get_abs_pos``) to the
  grid of ``PRETRAIN_IMG_SIZE`` when that differs;
* ``encoderblock_<i>/MultiHeadDotProductAttention_0/{query,key,value}/kernel`` (D, heads,
  head_dim) -> one ``blocks.<i>.attn.qkv.weight`` (3D, D): each reshaped to (D, D), transposed,
  stacked q, k, v; their biases (heads, head_dim) -> ``qkv.bias`` (3D,); ``out/kernel`` (heads,
  head_dim, D) -> ``attn.proj.weight`` (D, D) transposed;
* ``LayerNorm_0`` / ``LayerNorm_1`` ``scale`` / ``bias`` -> ``norm1`` / ``norm2`` ``weight`` /
  ``bias``; ``MlpBlock_0/Dense_{0,1}/kernel`` (in, out) -> ``mlp.fc{1,2}.weight`` (out, in).

``encoder_norm`` and every head (position predictor, cross-attention, projection / prototypes)
are left out: ViTDet has no final norm, and the heads are the pretext's.
"""

import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .convert import ConversionReport
from .flax_msgpack import flatten_tree

__all__ = ["convert_loca_vit", "find_vit_prefixes"]

_EMBED = "ToTokenSequence_0/embedding/kernel"
# Copies in a LOCA checkpoint, by the name of the subtree holding them: the released files hold
# the teacher as "teacher_weights", scenic's train state as "ema_params" (teacher) and "params".
_TEACHER_MARKERS = ("teacher", "ema")
_BLOCK = re.compile(r"^(?:Transformer/)?encoderblock_(\d+)/(.+)$")


def find_vit_prefixes(flat: Mapping) -> list:
    """
    Args:
        flat (Mapping): a flattened Flax tree (``"a/b/kernel" -> array``).

    Returns:
        list[str]: every prefix P with a LOCA / scenic ViT under it (``P + "ToTokenSequence_0/
        embedding/kernel"`` is a key).
    """
    return [k[: -len(_EMBED)] for k in flat if k.endswith(_EMBED)]


def _choose(prefixes, copy):
    teacher = [p for p in prefixes if any(m in p.lower() for m in _TEACHER_MARKERS)]
    student = [p for p in prefixes if p not in teacher]
    chosen = teacher if copy == "teacher" else student
    if len(chosen) == 1:
        return chosen[0]
    if len(prefixes) == 1:
        return prefixes[0]
    raise ValueError(
        f"Cannot tell which ViT to convert as the {copy}: ViTs under {prefixes}; pass --prefix"
    )


def _pos_embed(pos, cls_token, grid):
    if pos.ndim == 4:  # (1, h, w, D): scenic's posembed_input
        h, w = pos.shape[1:3]
    else:  # (1, N, D)
        h = w = int(round(pos.shape[1] ** 0.5))
        if h * w != pos.shape[1]:
            raise ValueError(f"position embedding {tuple(pos.shape)} is not a square grid")
    pos = torch.as_tensor(pos).reshape(1, h, w, -1)
    if grid is not None and (h, w) != (grid, grid):
        pos = F.interpolate(
            pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic", align_corners=False
        ).permute(0, 2, 3, 1)
    pos = pos.reshape(1, -1, pos.shape[-1])
    if cls_token:
        pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    return pos


def _block(sub, arr, dim):
    """(Detectron2 name, tensor) of one block parameter; None for a name it does not know."""
    t = torch.as_tensor(np.array(arr))
    attn = "MultiHeadDotProductAttention_0/"
    if sub.startswith(attn) and sub.split("/")[1] in ("query", "key", "value"):
        return "qkv", t  # merged by the caller
    if sub == attn + "out/kernel":
        return "attn.proj.weight", t.reshape(-1, dim).T.contiguous()
    if sub == attn + "out/bias":
        return "attn.proj.bias", t
    m = re.match(r"^LayerNorm_([01])/(scale|bias)$", sub)
    if m:
        return f"norm{int(m[1]) + 1}.{'weight' if m[2] == 'scale' else 'bias'}", t
    m = re.match(r"^MlpBlock_0/Dense_([01])/(kernel|bias)$", sub)
    if m:
        return f"mlp.fc{int(m[1]) + 1}.{'weight' if m[2] == 'kernel' else 'bias'}", (
            t.T.contiguous() if m[2] == "kernel" else t
        )
    return None


def convert_loca_vit(
    tree: Mapping,
    *,
    copy: str = "teacher",
    prefix: Optional[str] = None,
    cls_token: bool = True,
    grid: Optional[int] = None,
    model_prefix: str = "backbone.net.",
) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """
    Args:
        tree (Mapping): a Flax checkpoint tree (:func:`read_flax_checkpoint`), or its flattened
            form.
        copy (str): "teacher" (the EMA copy, as the release transfers) or "student".
        prefix (str or None): the flattened prefix of the ViT to convert, to override ``copy``.
        cls_token (bool): write ``pos_embed`` with a (zero) class-token row
            (``MODEL.VIT.PRETRAIN_USE_CLS_TOKEN``).
        grid (int or None): ``MODEL.VIT.PRETRAIN_IMG_SIZE // PATCH_SIZE``: resize the position
            grid to it; None keeps the release's.
        model_prefix (str): where the ViT lives in the detector.

    Returns:
        (OrderedDict[str, Tensor], ConversionReport)
    """
    flat = dict(tree) if all(isinstance(v, np.ndarray) for v in tree.values()) else None
    flat = flat if flat is not None else flatten_tree(tree)
    prefixes = find_vit_prefixes(flat)
    if not prefixes:
        raise ValueError(
            f"No LOCA / scenic ViT found: no key ending in '{_EMBED}'; first keys: "
            f"{sorted(flat)[:10]}"
        )
    if prefix is None:
        prefix = _choose(prefixes, copy)
    elif prefix not in prefixes:
        raise ValueError(f"No ViT under prefix '{prefix}'; ViTs found under {prefixes}")
    kernel = flat[prefix + _EMBED]
    dim = kernel.shape[-1]
    out = OrderedDict()
    out["patch_embed.proj.weight"] = torch.as_tensor(np.array(kernel)).permute(3, 2, 0, 1)
    out["patch_embed.proj.bias"] = torch.as_tensor(
        np.array(flat[prefix + "ToTokenSequence_0/embedding/bias"])
    )
    pos_key = next(
        (prefix + k for k in ("ToTokenSequence_0/posembed_input", "posembed_input/pos_embedding")
         if prefix + k in flat),
        None,
    )  # fmt: skip
    if pos_key is None:
        raise ValueError(f"No position embedding under '{prefix}ToTokenSequence_0/'")
    out["pos_embed"] = _pos_embed(np.array(flat[pos_key]), cls_token, grid)
    used = {prefix + _EMBED, prefix + "ToTokenSequence_0/embedding/bias", pos_key}
    qkv: Dict[int, Dict[str, torch.Tensor]] = {}
    unknown, dropped = [], {}
    for key, arr in flat.items():
        if not key.startswith(prefix) or key in used:
            if not key.startswith(prefix):
                dropped.setdefault("other copies / optimizer state", []).append(key)
            continue
        m = _BLOCK.match(key[len(prefix) :])
        if m is None:
            reason = "final norm (ViTDet has none)" if "encoder_norm" in key else "pretext heads"
            dropped.setdefault(reason, []).append(key)
            continue
        i, sub = int(m[1]), m[2]
        mapped = _block(sub, arr, dim)
        if mapped is None:
            unknown.append(key)
        elif mapped[0] == "qkv":
            part, leaf = sub.split("/")[1:3]
            qkv.setdefault(i, {})[f"{part}/{leaf}"] = mapped[1]
        else:
            out[f"blocks.{i}.{mapped[0]}"] = mapped[1]
    if unknown:
        raise ValueError(f"Cannot place these ViT parameters in ViTDet: {unknown[:10]}")
    for i in sorted(qkv):
        parts = qkv[i]
        missing = [f"{p}/{leaf}" for p in ("query", "key", "value") for leaf in ("kernel", "bias")]
        missing = [k for k in missing if k not in parts]
        if missing:
            raise ValueError(f"encoderblock_{i}: attention lacks {missing}")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [parts[f"{p}/kernel"].reshape(dim, dim).T for p in ("query", "key", "value")]
        ).contiguous()
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat(
            [parts[f"{p}/bias"].reshape(dim) for p in ("query", "key", "value")]
        )
    converted = OrderedDict((model_prefix + k, v.float()) for k, v in out.items())
    report = ConversionReport("", prefix, "vit", len(converted), dropped, prefixes)
    return converted, report
