"""
Synthetic checkpoints with the releases' key names and shapes (random values), written from the
releases' model definitions and configs, and the releases' renaming rules written independently of
detpre's converters, for tests/test_release_converters.py.

Sources: InsLoc limbo0000/InstanceLoc@a419bb6 (configs/FPN/insloc_fpn_200ep.py: mmdet ResNet-50,
FPN with BN, Shared4Conv2FC box head with BN, fc_cls 128-d; key branch ``*_k``; queues) and its
transfer/detection/convert_pretrained.py; AlignDet liming-ai/AlignDet@d29f70b (mmdet 2.25 Faster
R-CNN / RetinaNet without norms; tools/model_converters/extract_detector_weights.py); SlotCon
CVMI-Lab/SlotCon@30ff33d (main_pretrain.py's checkpoint, models/slotcon.py); LOCA scenic
projects/loca/vit.py (ViT tree) and flax/serialization.py (msgpack ext types).
"""

import re

import msgpack
import numpy as np
import torch

_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")


def randn(*shape, gen):
    return torch.randn(*shape, generator=gen)


def bn(prefix, c, gen):
    out = {f"{prefix}.{leaf}": randn(c, gen=gen) for leaf in _BN_LEAVES}
    out[f"{prefix}.running_var"] = out[f"{prefix}.running_var"].abs() + 0.5
    out[f"{prefix}.num_batches_tracked"] = torch.tensor(7)
    return out


def d2_resnet_name(name):
    """The release converters' ResNet rule (torchvision / mmdet name -> Detectron2 relative)."""
    name = re.sub(r"^conv1\.", "stem.conv1.", name)
    name = re.sub(r"^bn1\.", "stem.conv1.norm.", name)
    name = re.sub(r"^layer(\d)", lambda m: f"res{int(m[1]) + 1}", name)
    name = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", name)
    name = name.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
    return name


def resnet(prefix, tv_state, shift=0.0, layers=(1, 2, 3, 4), stem=True):
    out = {}
    for k, v in tv_state.items():
        if k.startswith("fc.") or (k.startswith("layer") and int(k[5]) not in layers):
            continue
        if not stem and not k.startswith("layer"):
            continue
        out[prefix + k] = v.clone() + shift if v.is_floating_point() else v.clone()
    return out


def insloc(tv_state, gen, c4=False):
    """InsLoc's pretraining checkpoint (mmcv: {"meta", "state_dict"}), query and key branches."""
    sd = {}
    for branch, shift in (("", 0.0), ("_k", 1.0)):
        if c4:
            sd.update(resnet(f"backbone{branch}.", tv_state, shift, layers=(1, 2, 3)))
            res5 = resnet("", tv_state, shift, layers=(4,), stem=False)
            sd.update({f"roi_head{branch}.shared_head.{k}": v for k, v in res5.items()})
            sd[f"roi_head{branch}.bbox_head.fc_cls.weight"] = randn(128, 2048, gen=gen)
            sd[f"roi_head{branch}.bbox_head.fc_cls.bias"] = randn(128, gen=gen)
            continue
        sd.update(resnet(f"backbone{branch}.", tv_state, shift))
        for i, c in enumerate((256, 512, 1024, 2048)):
            sd[f"neck{branch}.lateral_convs.{i}.conv.weight"] = randn(256, c, 1, 1, gen=gen)
            sd.update(bn(f"neck{branch}.lateral_convs.{i}.bn", 256, gen))
            sd[f"neck{branch}.fpn_convs.{i}.conv.weight"] = randn(256, 256, 3, 3, gen=gen)
            sd.update(bn(f"neck{branch}.fpn_convs.{i}.bn", 256, gen))
        head = f"roi_head{branch}.bbox_head"
        for i in range(4):
            sd[f"{head}.shared_convs.{i}.conv.weight"] = randn(256, 256, 3, 3, gen=gen)
            sd.update(bn(f"{head}.shared_convs.{i}.bn", 256, gen))
        for name, shape in (("shared_fcs.0", (1024, 12544)), ("shared_fcs.1", (1024, 1024))):
            sd[f"{head}.{name}.weight"] = randn(*shape, gen=gen)
            sd[f"{head}.{name}.bias"] = randn(shape[0], gen=gen)
        sd[f"{head}.fc_cls.weight"] = randn(128, 1024, gen=gen)
        sd[f"{head}.fc_cls.bias"] = randn(128, gen=gen)
    sd["queues"] = randn(1 if c4 else 4, 128, 16, gen=gen)
    sd["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"meta": {"epoch": 200}, "state_dict": sd}


def insloc_expected(sd, c4=False, branch=""):
    """InstanceLoc's convert_pretrained.py, FPN or --c4 mode, as a dict of Detectron2 names."""
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.startswith(f"backbone{branch}."):
            name = d2_resnet_name(k[len(f"backbone{branch}.") :])
            out[("backbone." if c4 else "backbone.bottom_up.") + name] = v
        elif c4 and k.startswith(f"roi_head{branch}.shared_head.layer4."):
            out["roi_heads." + d2_resnet_name(k[len(f"roi_head{branch}.shared_head.") :])] = v
        elif m := re.match(rf"^neck{branch}\.(lateral|fpn)_convs\.(\d)\.(conv|bn)\.(\w+)$", k):
            base = f"backbone.fpn_{'lateral' if m[1] == 'lateral' else 'output'}{int(m[2]) + 2}"
            out[base + ("." if m[3] == "conv" else ".norm.") + m[4]] = v
        elif m := re.match(
            rf"^roi_head{branch}\.bbox_head\.shared_convs\.(\d)\.(conv|bn)\.(\w+)$", k
        ):
            base = f"roi_heads.box_head.conv{int(m[1]) + 1}"
            out[base + ("." if m[2] == "conv" else ".norm.") + m[3]] = v
        elif m := re.match(rf"^roi_head{branch}\.bbox_head\.shared_fcs\.0\.(\w+)$", k):
            out["roi_heads.box_head.fc1." + m[1]] = v
    return out


def aligndet_rcnn(tv_state, gen, raw=False):
    """AlignDet's Faster R-CNN (extracted by extract_detector_weights.py, or raw: the online
    detector under ``backbone.`` beside its ``online_backbone`` / ``target_backbone`` copies)."""
    sd = resnet("backbone.", tv_state)
    for i, c in enumerate((256, 512, 1024, 2048)):
        for conv, shape in (("lateral_convs", (256, c, 1, 1)), ("fpn_convs", (256, 256, 3, 3))):
            sd[f"neck.{conv}.{i}.conv.weight"] = randn(*shape, gen=gen)
            sd[f"neck.{conv}.{i}.conv.bias"] = randn(256, gen=gen)
    for name, shape in (("rpn_conv", (256, 256, 3, 3)), ("rpn_cls", (3, 256, 1, 1)),
                        ("rpn_reg", (12, 256, 1, 1))):  # fmt: skip
        sd[f"rpn_head.{name}.weight"] = randn(*shape, gen=gen)
        sd[f"rpn_head.{name}.bias"] = randn(shape[0], gen=gen)
    for i in range(4):
        sd[f"roi_head.bbox_head.shared_convs.{i}.conv.weight"] = randn(256, 256, 3, 3, gen=gen)
        sd[f"roi_head.bbox_head.shared_convs.{i}.conv.bias"] = randn(256, gen=gen)
    sd["roi_head.bbox_head.shared_fcs.0.weight"] = randn(1024, 12544, gen=gen)
    sd["roi_head.bbox_head.shared_fcs.0.bias"] = randn(1024, gen=gen)
    if raw:  # before extraction: the projector and regressor, and the other copies
        sd["roi_head.bbox_head.fc_cls.0.weight"] = randn(1024, 1024, gen=gen)
        sd["roi_head.bbox_head.fc_cls.2.weight"] = randn(256, 1024, gen=gen)
        sd["roi_head.bbox_head.fc_reg.weight"] = randn(1024, 1024, gen=gen)
        sd = {"backbone." + k: v for k, v in sd.items()}
        sd["online_backbone.backbone.conv1.weight"] = sd["backbone.backbone.conv1.weight"]
        sd["target_backbone.backbone.conv1.weight"] = sd["backbone.backbone.conv1.weight"] + 1
    return {"meta": {}, "state_dict": sd}


def aligndet_retinanet(tv_state, gen):
    sd = resnet("backbone.", tv_state)
    for i, c in enumerate((512, 1024, 2048)):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = randn(256, c, 1, 1, gen=gen)
        sd[f"neck.lateral_convs.{i}.conv.bias"] = randn(256, gen=gen)
    for i, c in enumerate((256, 256, 256, 2048, 256)):  # P3-P5, then P6 on C5 and P7
        sd[f"neck.fpn_convs.{i}.conv.weight"] = randn(256, c, 3, 3, gen=gen)
        sd[f"neck.fpn_convs.{i}.conv.bias"] = randn(256, gen=gen)
    for branch in ("cls_convs", "reg_convs"):
        for i in range(4):
            sd[f"bbox_head.{branch}.{i}.conv.weight"] = randn(256, 256, 3, 3, gen=gen)
            sd[f"bbox_head.{branch}.{i}.conv.bias"] = randn(256, gen=gen)
    sd["bbox_head.retina_cls.0.weight"] = randn(256, 256, 1, 1, gen=gen)  # the projector
    sd["bbox_head.retina_reg.weight"] = randn(36, 256, 3, 3, gen=gen)
    return {"state_dict": sd}


def slotcon(tv_state, gen, num_prototypes=16):
    """SlotCon's main_pretrain.py checkpoint: DDP-wrapped student and teacher, heads, centre."""
    import argparse

    model = {}
    for name, shift in (("encoder_q", 0.0), ("encoder_k", 1.0)):
        model.update(resnet(f"module.{name}.", tv_state, shift))
    for side in ("q", "k"):
        for i, shape in ((0, (4096, 2048, 1, 1)), (3, (4096, 4096, 1, 1)), (6, (256, 4096, 1, 1))):
            model[f"module.projector_{side}.mlp.{i}.weight"] = randn(*shape, gen=gen)
        model[f"module.grouping_{side}.slot_embed.weight"] = randn(num_prototypes, 256, gen=gen)
    model["module.predictor_slot.mlp.0.weight"] = randn(4096, 256, 1, 1, gen=gen)
    model["module.center"] = randn(1, num_prototypes, gen=gen)
    return {"args": argparse.Namespace(arch="resnet50"), "model": model, "epoch": 800}


def loca_tree(dim, depth, heads, grid, gen_np):
    """LOCA's released Flax tree: the teacher under "teacher_weights", scenic's ViT names."""

    def rnd(*shape):
        return gen_np.standard_normal(shape).astype(np.float32)

    hd = dim // heads
    vit = {
        "ToTokenSequence_0": {
            "embedding": {"kernel": rnd(16, 16, 3, dim), "bias": rnd(dim)},
            "posembed_input": rnd(1, grid, grid, dim),
        },
        "encoder_norm": {"scale": rnd(dim), "bias": rnd(dim)},
        "position_predictor": {"kernel": rnd(dim, grid * grid)},
        "output_projection": {"prototypes": {"kernel": rnd(256, 32)}},
    }
    for i in range(depth):
        attn = {p: {"kernel": rnd(dim, heads, hd), "bias": rnd(heads, hd)}
                for p in ("query", "key", "value")}  # fmt: skip
        attn["out"] = {"kernel": rnd(heads, hd, dim), "bias": rnd(dim)}
        vit[f"encoderblock_{i}"] = {
            "LayerNorm_0": {"scale": rnd(dim), "bias": rnd(dim)},
            "MultiHeadDotProductAttention_0": attn,
            "LayerNorm_1": {"scale": rnd(dim), "bias": rnd(dim)},
            "MlpBlock_0": {
                "Dense_0": {"kernel": rnd(dim, 4 * dim), "bias": rnd(4 * dim)},
                "Dense_1": {"kernel": rnd(4 * dim, dim), "bias": rnd(dim)},
            },
        }
    return {"teacher_weights": vit, "global_step": np.int64(12345)}


def flax_bytes(tree):
    """flax.serialization.msgpack_serialize's encoding (ext 1: ndarray, ext 3: NumPy scalar)."""

    def default(obj):
        if isinstance(obj, np.ndarray):
            payload = msgpack.packb(
                (obj.shape, obj.dtype.name, obj.tobytes("C")), use_bin_type=True
            )
            return msgpack.ExtType(1, payload)
        if isinstance(obj, np.generic):
            arr = np.asarray(obj)
            payload = msgpack.packb(
                (arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True
            )
            return msgpack.ExtType(3, payload)
        raise TypeError(type(obj))

    return msgpack.packb(tree, default=default, strict_types=True)
