import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import Res5ROIHeads

import detpre  # noqa: F401  registers Res5ROIHeadsExtraNorm


def _c4_cfg(head):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.ROI_HEADS.NAME = head
    return cfg


def test_extra_norm_adds_only_res5_norm():
    plain = build_model(_c4_cfg("Res5ROIHeads")).state_dict()
    extra = build_model(_c4_cfg("Res5ROIHeadsExtraNorm")).state_dict()
    added = sorted(set(extra) - set(plain))
    assert set(plain) <= set(extra)
    assert added == sorted(
        f"roi_heads.res5.norm.{k}" for k in torch.nn.BatchNorm2d(2048).state_dict()
    )
    for k in plain:
        assert plain[k].shape == extra[k].shape


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
