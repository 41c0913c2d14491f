"""dilate_stage against Detectron2's own dilated res5 (``ResNet.make_stage`` with dilation 2 and
stride 1, what ``MODEL.RESNETS.RES5_DILATION 2`` builds), on the same weights."""

import pytest
import torch
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet

from detpre.modeling.backbone import dilate_stage

pytestmark = pytest.mark.usefixtures("one_thread")


def _res5(stride, dilation, stride_in_1x1):
    return torch.nn.Sequential(
        *ResNet.make_stage(
            BottleneckBlock,
            3,
            stride_per_block=[stride, 1, 1],
            in_channels=64,
            bottleneck_channels=32,
            out_channels=128,
            norm="BN",
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
    )


@pytest.mark.parametrize("stride_in_1x1", [False, True])
def test_dilated_stage_is_detectron2s_dilated_res5(stride_in_1x1):
    torch.manual_seed(0)
    strided = _res5(2, 1, stride_in_1x1).eval()
    for m in strided.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    reference = _res5(1, 2, stride_in_1x1).eval()
    reference.load_state_dict(strided.state_dict())
    x = torch.randn(2, 64, 14, 14)
    assert strided(x).shape == (2, 128, 7, 7)
    state = {k: v.clone() for k, v in strided.state_dict().items()}
    dilated = dilate_stage(strided, dilation=2)
    assert dilated is strided
    out = dilated(x)
    assert out.shape == (2, 128, 14, 14)
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
    # Stride and dilation are not in the state dict: the weights are those of the strided stage.
    assert dilated.state_dict().keys() == state.keys()
    assert all(torch.equal(dilated.state_dict()[k], v) for k, v in state.items())


def test_only_bottleneck_stages():
    stage = torch.nn.Sequential(BasicBlock(8, 8, stride=2))
    with pytest.raises(ValueError, match="block 0 is BasicBlock"):
        dilate_stage(stage)
