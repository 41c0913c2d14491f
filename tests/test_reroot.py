"""
Moving a ResNet between the layouts of Detectron2 models (R50-FPN, R50-C4, a plain backbone), on
a synthetic state dict and end to end through DetpreCheckpointer, from detector exports into the
segmentation models of configs/semseg.
"""

import itertools

import pytest
import torch
from detectron2.modeling import build_model

from detpre.checkpoint.checkpointer import DetpreCheckpointer
from detpre.checkpoint.reroot import reroot_resnet, resnet_layout

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUTS = ("fpn", "c4", "plain")

# The same ResNet tensors under each layout's names, written out by hand (one row per tensor).
RESNET_KEYS = [
    {
        "fpn": "backbone.bottom_up.stem.conv1.weight",
        "c4": "backbone.stem.conv1.weight",
        "plain": "backbone.stem.conv1.weight",
    },
    {
        "fpn": "backbone.bottom_up.stem.conv1.norm.running_var",
        "c4": "backbone.stem.conv1.norm.running_var",
        "plain": "backbone.stem.conv1.norm.running_var",
    },
    {
        "fpn": "backbone.bottom_up.res2.0.shortcut.weight",
        "c4": "backbone.res2.0.shortcut.weight",
        "plain": "backbone.res2.0.shortcut.weight",
    },
    {
        "fpn": "backbone.bottom_up.res2.2.conv3.norm.bias",
        "c4": "backbone.res2.2.conv3.norm.bias",
        "plain": "backbone.res2.2.conv3.norm.bias",
    },
    {
        "fpn": "backbone.bottom_up.res3.1.conv2.weight",
        "c4": "backbone.res3.1.conv2.weight",
        "plain": "backbone.res3.1.conv2.weight",
    },
    {
        "fpn": "backbone.bottom_up.res4.5.conv1.norm.num_batches_tracked",
        "c4": "backbone.res4.5.conv1.norm.num_batches_tracked",
        "plain": "backbone.res4.5.conv1.norm.num_batches_tracked",
    },
    {
        "fpn": "backbone.bottom_up.res5.0.shortcut.norm.weight",
        "c4": "roi_heads.res5.0.shortcut.norm.weight",
        "plain": "backbone.res5.0.shortcut.norm.weight",
    },
    {
        "fpn": "backbone.bottom_up.res5.2.conv3.weight",
        "c4": "roi_heads.res5.2.conv3.weight",
        "plain": "backbone.res5.2.conv3.weight",
    },
]

# Keys that are not the ResNet's, per layout: they never move.
OTHER_KEYS = {
    "fpn": [
        "backbone.fpn_lateral2.weight",
        "backbone.fpn_output5.norm.bias",
        "proposal_generator.rpn_head.conv.weight",
        "roi_heads.box_head.fc1.weight",
        "roi_heads.box_predictor.cls_score.bias",
    ],
    "c4": [
        "proposal_generator.rpn_head.anchor_deltas.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.mask_head.deconv.weight",
        "roi_heads.mask_head.predictor.bias",
    ],
    "plain": [
        "sem_seg_head.decode.conv_seg.weight",
        "sem_seg_head.aux.convs.0.norm.running_mean",
    ],
}


def synthetic(layout):
    gen = torch.Generator().manual_seed(LAYOUTS.index(layout))
    resnet = [torch.randn(3, generator=gen) for _ in RESNET_KEYS]
    other = {k: torch.randn(2, generator=gen) for k in OTHER_KEYS[layout]}
    state = {row[layout]: t for row, t in zip(RESNET_KEYS, resnet)}
    state.update(other)
    return state, resnet, other


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_of_each_synthetic_state(layout):
    assert resnet_layout(synthetic(layout)[0].keys()) == layout


@pytest.mark.parametrize("source, target", list(itertools.product(LAYOUTS, LAYOUTS)))
def test_reroot_between_every_pair_of_layouts(source, target):
    state, resnet, other = synthetic(source)
    out, message = reroot_resnet(state, target)
    expected_keys = {row[target] for row in RESNET_KEYS} | set(other)
    assert set(out) == expected_keys
    assert len(out) == len(state)
    for row, tensor in zip(RESNET_KEYS, resnet):
        assert out[row[target]] is tensor, row[target]
    for key, tensor in other.items():
        assert out[key] is tensor, key
    if source == target:
        assert message is None
        assert dict(out) == state
    else:
        assert message and source in message and target in message
    assert resnet_layout(out.keys()) == target


VIT_STATE = {
    "backbone.net.patch_embed.proj.weight": torch.zeros(1),
    "backbone.net.blocks.0.attn.qkv.weight": torch.zeros(1),
    "sem_seg_head.predictor.weight": torch.zeros(1),
}


@pytest.mark.parametrize("target", LAYOUTS + (None,))
def test_state_without_a_resnet_is_unchanged(target):
    assert resnet_layout(VIT_STATE) is None
    out, message = reroot_resnet(VIT_STATE, target)
    assert message is None
    assert list(out) == list(VIT_STATE)
    assert all(out[k] is v for k, v in VIT_STATE.items())


@pytest.mark.parametrize("source", LAYOUTS)
def test_model_without_a_resnet_leaves_the_state(source):
    state, _, _ = synthetic(source)
    out, message = reroot_resnet(state, None)
    assert message is None and dict(out) == state


@pytest.mark.parametrize("target", ["fpn", "plain"])
def test_c4_extra_norm_stays_a_head_key(target):
    # Res5ROIHeadsExtraNorm (the C4 detectors of configs/finetune) keeps a norm after the res5
    # blocks at roi_heads.res5.norm: a detection-head tensor, not a ResNet block's. It is one of
    # the "other keys" that stay where they are, for the load report to count as unused.
    state, resnet, _ = synthetic("c4")
    norm = {
        "roi_heads.res5.norm.weight": torch.ones(3),
        "roi_heads.res5.norm.running_mean": torch.zeros(3),
    }
    state.update(norm)
    out, _ = reroot_resnet(state, target)
    for key, tensor in norm.items():
        assert key in out and out[key] is tensor, sorted(k for k in out if "norm" in k)
    assert len(out) == len(state)


# ------------------------------------------------------------------------------------------------
# End to end: detector exports loaded into segmentors

C4 = "configs/finetune/mask_rcnn_R50_C4_cpu_coco_tiny.yaml"
FPN = "configs/finetune/faster_rcnn_R50_FPN_cpu_bccd.yaml"
FCN = "configs/semseg/fcn_R50_D8_cpu_coco_sem_seg.yaml"
SEMANTIC_FPN = "configs/semseg/semantic_fpn_R50_FPN_cpu_coco_sem_seg.yaml"
NORMS = (
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.FPN.NORM",
    "BN",
    "MODEL.SEM_SEG_HEAD.NORM",
    "BN",
    "MODEL.ROI_BOX_HEAD.NORM",
    "BN",
)


def randomize(model, seed):
    """Distinct random values in every float tensor, so that a tensor loaded from the wrong key
    cannot equal the right one by chance (fresh BN statistics are all 0 / 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("num_batches_tracked"):
                t.fill_(seed)
    return model


def export(model, path):
    torch.save(
        {"model": model.state_dict(), "__author__": "detpre", "matching_heuristics": False}, path
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def exports(load_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, path, seed in (("c4", C4, 1), ("fpn", FPN, 2)):
        model = randomize(build_model(load_config(path, *NORMS)), seed)
        file_name = str(root / f"{name}.pth")
        out[name] = (file_name, export(model, file_name))
    return out


def load_into(load_config, path, file_name):
    torch.manual_seed(0)
    model = build_model(load_config(path, *NORMS))
    checkpointer = DetpreCheckpointer(model)
    checkpointer.load(file_name)
    return model, {row.group: row for row in checkpointer.last_load_report}


def assert_fully_loaded(row):
    assert row.model > 0 and row.loaded == row.model, row
    assert row.missing == 0 and row.mismatched == 0, row


def assert_all_missing(row):
    assert row.model > 0 and row.missing == row.model and row.loaded == 0, row


def test_c4_export_into_the_fcn(load_config, exports):
    file_name, detector = exports["c4"]
    model, report = load_into(load_config, FCN, file_name)
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert any(k.startswith("backbone.res5.") for k in backbone)
    for key in backbone:
        source = "roi_heads." + key[len("backbone.") :] if key.startswith("backbone.res5.") else key
        assert torch.equal(state[key], detector[source]), key
    assert_fully_loaded(report["backbone"])
    assert report["backbone"].model == len(backbone)
    assert_all_missing(report["sem_seg_head"])
    assert report["sem_seg_head"].model == len([k for k in state if k.startswith("sem_seg_head.")])
    # the detector's heads are unused
    assert report["proposal_generator"].unexpected > 0
    assert report["predictors"].unexpected > 0


def test_c4_export_extra_norm_is_reported_as_an_unused_head_tensor(load_config, exports):
    file_name, detector = exports["c4"]
    extra_norm = [k for k in detector if k.startswith("roi_heads.res5.norm.")]
    assert extra_norm  # Res5ROIHeadsExtraNorm
    _, report = load_into(load_config, FCN, file_name)
    assert report["backbone"].unexpected == 0, report["backbone"]
    assert report["roi_heads.res5"].unexpected == len(extra_norm)


def test_fpn_export_into_semantic_fpn(load_config, exports):
    file_name, detector = exports["fpn"]
    model, report = load_into(load_config, SEMANTIC_FPN, file_name)
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert any(k.startswith("backbone.fpn_") for k in backbone)
    for key in backbone:
        assert torch.equal(state[key], detector[key]), key
    assert_fully_loaded(report["backbone.bottom_up"])
    assert_fully_loaded(report["backbone.fpn"])
    assert report["backbone.bottom_up"].unexpected == 0
    assert report["backbone.fpn"].unexpected == 0
    assert_all_missing(report["sem_seg_head"])


def test_fpn_export_into_the_fcn(load_config, exports):
    file_name, detector = exports["fpn"]
    model, report = load_into(load_config, FCN, file_name)
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    for key in backbone:
        assert torch.equal(state[key], detector["backbone.bottom_up." + key[9:]]), key
    assert_fully_loaded(report["backbone"])
    assert report["backbone"].unexpected == 0
    # the FPN stays where it was: unused by the FCN
    fpn_keys = [k for k in detector if k.startswith("backbone.fpn_")]
    assert report["backbone.fpn"].unexpected == len(fpn_keys) > 0
    assert_all_missing(report["sem_seg_head"])
