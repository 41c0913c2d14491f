"""
The semantic-segmentation models of configs/semseg: mmseg's dilated ResNet (FCN R50-D8 / D16),
FCNHead and its losses, Segmenter's linear head, the frozen ViT of the linear probe and the poly
learning-rate schedule with a floor, each against its rule written out here.
"""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from torch.nn import functional as F

from detpre.engine.finetune_trainer import FinetuneTrainer
from detpre.modeling.semseg import FCNHead, LinearSegHead
from detpre.solver import WarmupPolyLRWithFloor, build_poly_lr_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

D8 = "configs/semseg/Base-FCN-R50-D8.yaml"
D16 = "configs/semseg/Base-FCN-R50-D16-MoCo.yaml"
BN = ("MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN")
LINEAR_PROBE = "configs/semseg/linear_probe_ViT_tiny_cpu_coco_sem_seg.yaml"
LINEAR = "configs/semseg/linear_ViT_tiny_cpu_coco_sem_seg.yaml"
IGNORE = 255

# mmseg's ResNet-50: blocks per stage, and per model its strides and dilations (res2..res5).
STAGE_BLOCKS = (3, 4, 6, 3)
MMSEG_RESNET = {
    D8: {"strides": (1, 2, 1, 1), "dilations": (1, 1, 2, 4), "output_stride": 8},
    D16: {"strides": (1, 2, 2, 1), "dilations": (1, 1, 1, 2), "output_stride": 16},
}


def mmseg_res_layer(num_blocks, stride, dilation, contract_dilation=True):
    """
    mmseg's ``ResLayer``: (3x3 dilation, 3x3 stride) per block; the first block strides and, with
    ``contract_dilation``, a dilated stage's first block uses half the dilation.
    """
    first = dilation // 2 if contract_dilation and dilation > 1 else dilation
    return [(first, stride)] + [(dilation, 1)] * (num_blocks - 1)


def conv_out(n, kernel, stride, padding):
    return (n + 2 * padding - kernel) // stride + 1


def resnet_out(n, strides):
    """The spatial size after the stem (7x7/2 conv, 3x3/2 max pool) and each stage's 3x3 conv."""
    n = conv_out(n, 7, 2, 3)
    n = conv_out(n, 3, 2, 1)
    for s in strides:
        n = conv_out(n, 3, s, 1)  # padding = dilation keeps a stride-1 dilated 3x3 conv's size
    return n


@pytest.fixture(scope="module")
def backbones(load_config):
    torch.manual_seed(0)
    return {path: build_backbone(load_config(path, *BN)).eval() for path in (D8, D16)}


def test_rule_gives_the_documented_dilations():
    # The documented patterns, so that the rule above is the one meant.
    d8, d16 = MMSEG_RESNET[D8], MMSEG_RESNET[D16]
    assert [d for d, _ in mmseg_res_layer(6, d8["strides"][2], d8["dilations"][2])] == [1] + [2] * 5
    assert [d for d, _ in mmseg_res_layer(3, d8["strides"][3], d8["dilations"][3])] == [2, 4, 4]
    assert [d for d, _ in mmseg_res_layer(6, d16["strides"][2], d16["dilations"][2])] == [1] * 6
    assert [d for d, _ in mmseg_res_layer(3, d16["strides"][3], d16["dilations"][3])] == [1, 2, 2]


@pytest.mark.parametrize("path", [D8, D16])
def test_dilations_and_strides_follow_mmseg(backbones, path):
    backbone = backbones[path]
    spec = MMSEG_RESNET[path]
    for i, name in enumerate(("res2", "res3", "res4", "res5")):
        stage = getattr(backbone, name)
        expected = mmseg_res_layer(STAGE_BLOCKS[i], spec["strides"][i], spec["dilations"][i])
        assert len(stage) == len(expected)
        for j, (block, (dilation, stride)) in enumerate(zip(stage, expected)):
            where = f"{path} {name}.{j}"
            assert block.conv2.dilation == (dilation, dilation), where
            assert block.conv2.padding == (dilation, dilation), where
            # pytorch style (STRIDE_IN_1X1 False): the stride is in the 3x3 conv
            assert block.conv1.stride == (1, 1), where
            assert block.conv2.stride == (stride, stride), where
            assert block.conv3.stride == (1, 1), where
            if j == 0:
                assert block.shortcut.stride == (stride, stride), where
            else:
                assert block.shortcut is None, where


@pytest.mark.parametrize("path", [D8, D16])
@pytest.mark.parametrize("size", [(64, 96), (67, 90)])
def test_output_stride_and_size_divisibility(backbones, path, size):
    backbone = backbones[path]
    spec = MMSEG_RESNET[path]
    assert backbone.size_divisibility == spec["output_stride"]
    assert {k: s.stride for k, s in backbone.output_shape().items()} == {
        name: spec["output_stride"] for name in backbone.output_shape()
    }
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, *size))
    expected = tuple(resnet_out(n, spec["strides"][1:]) for n in size)
    assert tuple(out["res5"].shape) == (1, 2048, *expected)
    # the ceil chain is ceil(n / output stride)
    assert expected == tuple(math.ceil(n / spec["output_stride"]) for n in size)
    if "res4" in out:
        assert tuple(out["res4"].shape) == (1, 1024, *expected)


# ------------------------------------------------------------------------------------------------
# FCNHead


def fcn_head(*, avg_non_ignore=False, align_corners=False, aux="res4", aux_weight=0.4, classes=5):
    shapes = {
        "res4": ShapeSpec(channels=12, stride=8),
        "res5": ShapeSpec(channels=16, stride=8),
    }
    return FCNHead(
        shapes,
        in_feature="res5",
        num_classes=classes,
        conv_dims=8,
        num_convs=2,
        concat_input=True,
        dropout=0.0,
        norm="BN",
        conv_dilation=1,
        ignore_value=IGNORE,
        loss_weight=1.0,
        avg_non_ignore=avg_non_ignore,
        align_corners=align_corners,
        aux_in_feature=aux,
        aux_conv_dims=6,
        aux_loss_weight=aux_weight,
    )


def random_features(n=2, h=5, w=7):
    gen = torch.Generator().manual_seed(1)
    return {
        "res4": torch.randn(n, 12, h, w, generator=gen),
        "res5": torch.randn(n, 16, h, w, generator=gen),
    }


def random_targets(n, h, w, classes, seed=2):
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n, h, w), generator=gen)
    targets[torch.rand(n, h, w, generator=gen) < 0.3] = IGNORE
    return targets


def cross_entropy_by_hand(logits, targets, avg_non_ignore, align_corners):
    """Upsample to the labels, -log softmax at the label, summed over labelled pixels, divided by
    the labelled pixels or by every pixel of the batch."""
    up = F.interpolate(
        logits, size=targets.shape[-2:], mode="bilinear", align_corners=align_corners
    )
    log_prob = up - up.exp().sum(dim=1, keepdim=True).log()
    labelled = targets != IGNORE
    index = torch.where(labelled, targets, torch.zeros_like(targets))
    nll = -log_prob.gather(1, index[:, None])[:, 0]
    total = nll[labelled].sum()
    return total / (labelled.sum() if avg_non_ignore else targets.numel())


def test_fcn_inference_shape_is_the_stride_times_the_feature():
    head = fcn_head().eval()
    features = random_features(n=2, h=5, w=7)
    with torch.no_grad():
        logits, losses = head(features)
        decode = head.decode(features["res5"])
    assert losses == {}
    assert tuple(logits.shape) == (2, 5, 40, 56)
    expected = F.interpolate(decode, size=(40, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
@pytest.mark.parametrize("align_corners", [False, True])
def test_fcn_losses_equal_a_cross_entropy_by_hand(avg_non_ignore, align_corners):
    torch.manual_seed(0)
    head = fcn_head(avg_non_ignore=avg_non_ignore, align_corners=align_corners).train()
    features = random_features(n=2, h=5, w=7)
    targets = random_targets(2, 40, 56, classes=5)
    assert (targets == IGNORE).any() and (targets != IGNORE).any()
    none, losses = head(features, targets)
    assert none is None
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    with torch.no_grad():  # train mode: BN on batch statistics, as in the forward above
        decode = head.decode(features["res5"])
        aux = head.aux(features["res4"])
    expected = cross_entropy_by_hand(decode, targets, avg_non_ignore, align_corners)
    torch.testing.assert_close(losses["loss_sem_seg"].detach(), expected)
    expected_aux = 0.4 * cross_entropy_by_hand(aux, targets, avg_non_ignore, align_corners)
    torch.testing.assert_close(losses["loss_sem_seg_aux"].detach(), expected_aux)
    # the two reductions differ by the labelled fraction
    labelled = (targets != IGNORE).sum().item()
    if not avg_non_ignore:
        by_labelled = cross_entropy_by_hand(decode, targets, True, align_corners)
        torch.testing.assert_close(expected, by_labelled * labelled / targets.numel())


def test_aux_loss_weight_scales_the_aux_loss():
    features = random_features()
    targets = random_targets(2, 40, 56, classes=5)
    torch.manual_seed(0)
    one = fcn_head(aux_weight=1.0).train()
    torch.manual_seed(0)
    weighted = fcn_head(aux_weight=0.4).train()
    _, l1 = one(features, targets)
    _, l04 = weighted(features, targets)
    torch.testing.assert_close(l04["loss_sem_seg"], l1["loss_sem_seg"])
    torch.testing.assert_close(l04["loss_sem_seg_aux"], 0.4 * l1["loss_sem_seg_aux"])
    _, no_aux = fcn_head(aux="").train()(features, targets)
    assert set(no_aux) == {"loss_sem_seg"}


def test_unknown_aux_feature_is_named(load_config):
    cfg = load_config(D8, *BN, "SEMSEG.AUX_IN_FEATURE", "res3x")
    shapes = {
        "res4": ShapeSpec(channels=1024, stride=8),
        "res5": ShapeSpec(channels=2048, stride=8),
    }
    with pytest.raises(ValueError, match="'res3x'"):
        FCNHead(cfg, shapes)


def test_fcn_parameter_count_is_mmsegs(load_config):
    cfg = load_config(D8, *BN)
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    shapes = {
        "res4": ShapeSpec(channels=1024, stride=8),
        "res5": ShapeSpec(channels=2048, stride=8),
    }
    head = FCNHead(cfg, shapes)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    def conv_bn(cin, cout, kernel):  # mmcv ConvModule with a norm: no conv bias, BN weight+bias
        return cin * cout * kernel * kernel + 2 * cout

    decode = (
        conv_bn(2048, 512, 3)
        + conv_bn(512, 512, 3)
        + conv_bn(2048 + 512, 512, 3)
        + (512 * k + k)  # conv_seg, 1x1 with bias
    )
    aux = conv_bn(1024, 256, 3) + (256 * k + k)
    assert count(head.decode) == decode
    assert count(head.aux) == aux
    assert count(head) == decode + aux


# ------------------------------------------------------------------------------------------------
# LinearSegHead


def linear_head(channels=24, classes=5, avg_non_ignore=True):
    head = LinearSegHead(
        {"last_feat": ShapeSpec(channels=channels, stride=16)},
        in_feature="last_feat",
        num_classes=classes,
        dropout=0.0,
        ignore_value=IGNORE,
        loss_weight=1.0,
        avg_non_ignore=avg_non_ignore,
    )
    with torch.no_grad():  # a non-trivial affine LayerNorm and a non-zero bias
        head.norm.weight.uniform_(0.5, 1.5)
        head.norm.bias.normal_()
        head.predictor.bias.normal_()
    return head


def linear_by_hand(head, tokens):
    x = tokens.permute(0, 2, 3, 1)  # (N, h, w, C)
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    x = (x - mean) / torch.sqrt(var + 1e-6) * head.norm.weight + head.norm.bias
    weight = head.predictor.weight[:, :, 0, 0]  # (K, C)
    return torch.einsum("nhwc,kc->nkhw", x, weight) + head.predictor.bias[None, :, None, None]


def test_linear_head_logits_and_inference_upsampling():
    torch.manual_seed(0)
    head = linear_head().eval()
    # a large offset: the LayerNorm's epsilon and centring matter
    tokens = torch.randn(2, 24, 3, 4) * 0.01 + 3.0
    with torch.no_grad():
        logits = head.layers({"last_feat": tokens})
        out, losses = head({"last_feat": tokens})
    expected = linear_by_hand(head, tokens)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert losses == {}
    assert tuple(out.shape) == (2, 5, 48, 64)
    torch.testing.assert_close(
        out,
        F.interpolate(expected, size=(48, 64), mode="bilinear", align_corners=False),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_linear_head_loss(avg_non_ignore):
    torch.manual_seed(0)
    head = linear_head(avg_non_ignore=avg_non_ignore).train()
    tokens = torch.randn(2, 24, 3, 4)
    targets = random_targets(2, 48, 64, classes=5)
    _, losses = head({"last_feat": tokens}, targets)
    with torch.no_grad():
        expected = cross_entropy_by_hand(
            linear_by_hand(head, tokens), targets, avg_non_ignore, False
        )
    torch.testing.assert_close(losses["loss_sem_seg"].detach(), expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# The ViT of the linear probe


def seg_batch(n=2, size=64, classes=13, seed=3):
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        label = torch.randint(0, classes, (size, size), generator=gen)
        label[:4] = IGNORE
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
        batch.append({"image": image, "sem_seg": label, "height": size, "width": size})
    return batch


def test_frozen_vit_stays_in_eval_mode_and_takes_no_gradient(load_config):
    torch.manual_seed(0)
    model = build_model(load_config(LINEAR_PROBE))
    assert model.backbone.size_divisibility == 16
    model.train()
    net = model.backbone.net
    assert not any(m.training for m in net.modules())
    assert model.sem_seg_head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    losses = model(seg_batch())
    assert set(losses) == {"loss_sem_seg"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    head_grads = [p.grad for p in model.sem_seg_head.parameters()]
    assert head_grads and all(g is not None for g in head_grads)
    assert any(g.abs().sum() > 0 for g in head_grads)
    # eval() then train() again: still frozen in eval mode
    model.eval().train()
    assert not any(m.training for m in net.modules())


def test_unfrozen_vit_trains(load_config):
    torch.manual_seed(0)
    model = build_model(load_config(LINEAR)).train()
    assert model.backbone.net.training
    losses = model(seg_batch())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert grads and all(g is not None for g in grads)
    assert model.backbone.net.patch_embed.proj.weight.grad.abs().sum() > 0


def test_freeze_backbone_with_a_resnet_names_freeze_at(load_config):
    cfg = load_config(D8, *BN, "SEMSEG.FREEZE_BACKBONE", "True")
    with pytest.raises(ValueError, match=r"MODEL\.BACKBONE\.FREEZE_AT"):
        build_backbone(cfg)


# ------------------------------------------------------------------------------------------------
# The poly schedule with a floor


def poly_by_hand(t, base, end, max_iter, power, warmup_iters, warmup_factor):
    if t < warmup_iters:
        alpha = t / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha  # Detectron2's / mmcv's linear warm-up
    else:
        warm = 1.0
    return warm * ((base - end) * (1 - t / max_iter) ** power + end)


def test_poly_lr_with_floor_follows_the_formula():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    bases = (0.01, 0.002)
    opt = torch.optim.SGD([{"params": [p], "lr": b} for p, b in zip(params, bases)], lr=0.01)
    end, max_iter, power, warmup_iters, warmup_factor = 1e-4, 50, 0.9, 8, 0.1
    sched = WarmupPolyLRWithFloor(
        opt,
        max_iter,
        end_lr=end,
        warmup_factor=warmup_factor,
        warmup_iters=warmup_iters,
        warmup_method="linear",
        power=power,
    )
    seen = []
    for t in range(max_iter + 1):
        for group, base in zip(opt.param_groups, bases):
            expected = poly_by_hand(t, base, end, max_iter, power, warmup_iters, warmup_factor)
            assert group["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), (t, base)
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[-1] == pytest.approx(end, rel=1e-12)  # the floor at T, not 0
    assert min(seen) == pytest.approx(end, rel=1e-12)


def test_poly_lr_from_the_config(load_config):
    cfg = load_config(D8, *BN, "SOLVER.MAX_ITER", "40")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = FinetuneTrainer.build_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupPolyLRWithFloor)
    for t in range(41):
        expected = (0.01 - 1e-4) * (1 - t / 40) ** 0.9 + 1e-4  # the config: no warm-up
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), t
        opt.step()
        sched.step()


def test_poly_lr_refuses_deeplabs_constant_ending(load_config):
    cfg = load_config(D8, *BN, "SOLVER.POLY_LR_CONSTANT_ENDING", "0.1")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ValueError, match="POLY_LR_CONSTANT_ENDING"):
        build_poly_lr_scheduler(cfg, opt)
