import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, Res5ROIHeads

from detpre.modeling.roi_heads import FastRCNNConvFCHeadExtraNorm

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _c4_cfg(head):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.ROI_HEADS.NAME = head
    return cfg


def test_extra_norm_normalises_res5_output():
    model = build_model(_c4_cfg("Res5ROIHeadsExtraNorm"))
    res5 = model.roi_heads.res5
    assert isinstance(model.roi_heads, Res5ROIHeads)
    assert isinstance(res5.norm, torch.nn.BatchNorm2d) and res5.norm.num_features == 2048
    res5.train()
    out = res5(torch.randn(4, 1024, 6, 6))
    # train-mode BN with unit weight and zero bias: per-channel mean 0, variance 1.
    mean = out.mean(dim=(0, 2, 3))
    var = out.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(var, torch.ones_like(var), atol=1e-2)


def _fpn_cfg(head, norm="BN"):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/finetune/Base-RCNN-FPN-SyncBN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    for node in (cfg.MODEL.RESNETS, cfg.MODEL.FPN, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD):
        node.NORM = norm
    cfg.MODEL.ROI_BOX_HEAD.NAME = head
    return cfg


@pytest.mark.parametrize(
    "cfg,plain,extra,added,channels",
    [
        # MoCo's detection/train_net.py: a norm after res5 (roi_heads.res5.norm).
        (_c4_cfg, "Res5ROIHeads", "Res5ROIHeadsExtraNorm", "roi_heads.res5.norm.", 2048),
        # InsLoc's transfer/detection/train_net.py: roi_heads.box_head.fc_extra_norm.
        (
            _fpn_cfg,
            "FastRCNNConvFCHead",
            "FastRCNNConvFCHeadExtraNorm",
            "roi_heads.box_head.fc_extra_norm.",
            1024,
        ),
    ],
)
def test_extra_norm_heads_add_only_the_release_keys(cfg, plain, extra, added, channels):
    plain_state = build_model(cfg(plain)).state_dict()
    extra_state = build_model(cfg(extra)).state_dict()
    assert set(plain_state) <= set(extra_state)
    assert sorted(set(extra_state) - set(plain_state)) == sorted(
        added + k for k in torch.nn.BatchNorm2d(channels).state_dict()
    )
    for k in plain_state:
        assert plain_state[k].shape == extra_state[k].shape


def test_fc_extra_norm_head_normalises_after_fc_relu():
    torch.manual_seed(0)
    plain = FastRCNNConvFCHead(
        _fpn_cfg("FastRCNNConvFCHead"), ShapeSpec(channels=8, height=7, width=7)
    )
    head = FastRCNNConvFCHeadExtraNorm(
        _fpn_cfg("FastRCNNConvFCHeadExtraNorm"), ShapeSpec(channels=8, height=7, width=7)
    )
    head.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        head.fc_extra_norm.weight.uniform_(0.5, 2)
        head.fc_extra_norm.bias.uniform_(-1, 1)
    x = torch.randn(6, 8, 7, 7)
    head.train(), plain.train()
    # Independently: the plain head's output (ReLU after fc1), batch-normalised per channel.
    y = plain(x)
    mean, var = y.mean(0), y.var(0, unbiased=False)
    expected = (y - mean) / torch.sqrt(
        var + 1e-5
    ) * head.fc_extra_norm.weight + head.fc_extra_norm.bias
    assert torch.allclose(head(x), expected, atol=1e-4)
    assert head.output_shape.channels == 1024
    head.eval()  # running statistics in eval
    assert torch.allclose(
        head(x), head.fc_extra_norm(plain.eval()(x)[:, :, None, None]).flatten(1), atol=1e-6
    )
    with pytest.raises(ValueError, match="NORM"):
        FastRCNNConvFCHeadExtraNorm(
            _fpn_cfg("FastRCNNConvFCHeadExtraNorm", norm=""),
            ShapeSpec(channels=8, height=7, width=7),
        )
