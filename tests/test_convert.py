import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model

from detpre.checkpoint import (
    convert_torchvision_resnet,
    find_resnet_prefixes,
    infer_target,
    to_detectron2_pickle,
    unwrap_state_dict,
)

# torchvision name -> Detectron2 name, written out by hand for a few tensors of every kind
SPOT_CHECKS = {
    "conv1.weight": "stem.conv1.weight",
    "bn1.bias": "stem.conv1.norm.bias",
    "layer1.0.conv1.weight": "res2.0.conv1.weight",
    "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
    "layer2.0.downsample.1.weight": "res3.0.shortcut.norm.weight",
    "layer3.5.bn2.running_var": "res4.5.conv2.norm.running_var",
    "layer4.2.bn3.running_mean": "res5.2.conv3.norm.running_mean",
    "layer4.2.conv3.weight": "res5.2.conv3.weight",
}


@pytest.fixture(scope="module")
def d2_backbone_state():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return build_backbone(cfg).state_dict()


def _expected_count(tv_state):
    return sum(not k.startswith("fc.") and "num_batches_tracked" not in k for k in tv_state)


def _moco(tv_state):
    """MoCo v2's released layout: encoder_q/encoder_k with an MLP fc, and the queue."""
    encoder = {k: v for k, v in tv_state.items() if not k.startswith("fc.")}
    encoder.update({"fc.0.weight": torch.zeros(2048, 2048), "fc.0.bias": torch.zeros(2048)})
    encoder.update({"fc.2.weight": torch.zeros(128, 2048), "fc.2.bias": torch.zeros(128)})
    state = {f"module.encoder_q.{k}": v for k, v in encoder.items()}
    state.update({f"module.encoder_k.{k}": v.clone() for k, v in encoder.items()})
    state.update({"module.queue": torch.zeros(128, 16), "module.queue_ptr": torch.zeros(1)})
    return {"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {}}


VARIANTS = {
    "torchvision": lambda s: dict(s),
    "moco": _moco,
    "densecl": lambda s: {
        "state_dict": {f"backbone.{k}": v for k, v in s.items() if not k.startswith("fc.")},
        "meta": {"epoch": 200},
    },
    "slotcon": lambda s: {
        "model": {
            **{f"module.encoder.{k}": v for k, v in s.items()},
            "module.projector.layer1.0.weight": torch.zeros(4096, 2048),
            "module.prototypes": torch.zeros(256, 256),
        }
    },
    "encoder": lambda s: {f"encoder.{k}": v for k, v in s.items()},
}
PREFIXES = {
    "torchvision": "",
    "moco": "module.encoder_q.",
    "densecl": "backbone.",
    "slotcon": "module.encoder.",
    "encoder": "encoder.",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_resnet_tensor_maps_to_the_d2_backbone(variant, tv_state, d2_backbone_state):
    checkpoint = VARIANTS[variant](tv_state)
    converted, report = convert_torchvision_resnet(checkpoint)

    assert report.prefix == PREFIXES[variant]
    assert report.converted == len(converted) == _expected_count(tv_state)
    assert set(converted) == set(d2_backbone_state)
    for name, tensor in converted.items():
        assert tuple(tensor.shape) == tuple(d2_backbone_state[name].shape), name
    for tv_name, d2_name in SPOT_CHECKS.items():
        assert torch.equal(converted[d2_name], tv_state[tv_name]), tv_name
    assert len(report.dropped["num_batches_tracked"]) == 53
    if variant == "moco":
        assert report.wrapper == "state_dict"
        assert sorted(report.dropped["fc / MLP head"]) == [
            f"module.encoder_q.fc.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")
        ]
        momentum = [k for k in checkpoint["state_dict"] if k.startswith("module.encoder_k.")]
        assert sorted(report.dropped["momentum encoder"]) == sorted(momentum)
        assert report.dropped["queue"] == ["module.queue", "module.queue_ptr"]
    if variant == "slotcon":
        assert report.wrapper == "model"
        assert len(report.dropped["projection head / other module"]) == 2


def test_explicit_prefix_takes_the_momentum_encoder(tv_state):
    ckpt = _moco(tv_state)
    ckpt["state_dict"]["module.encoder_k.conv1.weight"] += 1.0
    converted, report = convert_torchvision_resnet(ckpt, prefix="module.encoder_k.")
    assert report.prefix == "module.encoder_k."
    assert torch.equal(converted["stem.conv1.weight"], tv_state["conv1.weight"] + 1.0)
    assert "module.encoder_q.conv1.weight" in report.dropped["projection head / other module"]


@pytest.mark.parametrize("config", ["mask_rcnn_R_50_FPN_1x", "mask_rcnn_R_50_C4_1x"])
def test_exact_targets_match_the_model(config, tv_state):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(f"COCO-InstanceSegmentation/{config}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model_state = build_model(cfg).state_dict()
    target = infer_target(model_state)
    assert target == ("fpn" if "FPN" in config else "c4")

    converted, _ = convert_torchvision_resnet(tv_state, target=target)
    resnet_keys = {
        k
        for k in model_state
        if k.startswith(("backbone.bottom_up.", "roi_heads.res5."))
        or (k.startswith("backbone.") and target == "c4")
    }
    assert set(converted) == resnet_keys
    assert len(resnet_keys) == _expected_count(tv_state)
    for name, tensor in converted.items():
        assert tensor.shape == model_state[name].shape, name
    prefix = {"fpn": "backbone.bottom_up.", "c4": "backbone."}[target]
    assert torch.equal(converted[prefix + "res3.0.conv2.weight"], tv_state["layer2.0.conv2.weight"])
    if target == "c4":
        assert torch.equal(
            converted["roi_heads.res5.1.conv1.norm.weight"], tv_state["layer4.1.bn1.weight"]
        )


def test_plain_encoder_next_to_a_prefixed_momentum_copy(tv_state):
    state = {**tv_state, **{f"encoder_k.{k}": v for k, v in tv_state.items()}}
    converted, report = convert_torchvision_resnet(state)
    assert report.prefix == "" and report.candidates == ["", "encoder_k."]
    assert len(converted) == _expected_count(tv_state)
    assert len(report.dropped["momentum encoder"]) == len(tv_state)


def test_errors_name_the_key(tv_state):
    bad = {f"module.encoder_q.{k}": v for k, v in tv_state.items()}
    bad["module.encoder_q.layer1.0.se.fc1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"module\.encoder_q\.layer1\.0\.se\.fc1\.weight"):
        convert_torchvision_resnet(bad)

    two = {
        **{f"a.{k}": v for k, v in tv_state.items()},
        **{f"b.{k}": v for k, v in tv_state.items()},
    }
    with pytest.raises(ValueError, match=r"Several ResNets.*'a\.', 'b\.'"):
        convert_torchvision_resnet(two)
    with pytest.raises(ValueError, match="No torchvision ResNet under prefix 'c.'"):
        convert_torchvision_resnet(two, prefix="c.")
    with pytest.raises(ValueError, match="No torchvision ResNet found"):
        convert_torchvision_resnet({"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"keys \('state_dict', 'model'\).*'epoch'"):
        unwrap_state_dict({"epoch": 3})
    with pytest.raises(ValueError, match="Unknown target 'dc5'"):
        convert_torchvision_resnet(tv_state, target="dc5")


def test_find_resnet_prefixes_needs_the_whole_stem(tv_state):
    assert find_resnet_prefixes(tv_state) == [""]
    assert find_resnet_prefixes({"x.conv1.weight": torch.zeros(1), "x.bn1.weight": 0}) == []


def test_tool_writes_moco_pickle(tmp_path, tv_state, repo_root):
    src, dst = tmp_path / "moco.pth.tar", tmp_path / "moco.pkl"
    torch.save(_moco(tv_state), src)
    out = subprocess.run(
        [sys.executable, os.path.join(repo_root, "tools", "convert_pretrained.py"), src, dst],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    n = _expected_count(tv_state)
    assert "encoder prefix: module.encoder_q." in out and f"converted: {n} tensors" in out
    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "detpre" and data["matching_heuristics"] is True
    assert len(data["model"]) == n
    for tv_name, d2_name in SPOT_CHECKS.items():
        assert isinstance(data["model"][d2_name], np.ndarray)
        np.testing.assert_array_equal(data["model"][d2_name], tv_state[tv_name].numpy())


def test_exact_target_pickle_turns_heuristics_off(tv_state):
    converted, _ = convert_torchvision_resnet(tv_state, target="fpn")
    data = to_detectron2_pickle(converted, "fpn")
    assert data["matching_heuristics"] is False
    assert all(k.startswith("backbone.bottom_up.") for k in data["model"])
