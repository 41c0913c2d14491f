"""
detpre's semantic-segmentation parts against figures measured by running the releases' own code
(never imported here): mmseg 0.x as DenseCL's fork ships it (WXinlong/mmsegmentation@32b0aff,
with mmcv's image functions from open-mmlab/mmcv v1.7.1 mmcv/image/geometric.py and
colorspace.py, and mmcv's PolyLrUpdaterHook from mmcv/runner/hooks/lr_updater.py), and Segmenter
(rstrudel/segmenter@20d1bfa). The release files ran in a scratch folder with their framework
imports stubbed (registries as no-ops; mmcv's ConvModule as conv without bias + BatchNorm2d named
"bn" + ReLU; timm's trunc_normal_ / DropPath; einops was the real package).

The linear decoder's LayerNorm is compared at Segmenter's eps (1e-5); detpre keeps LOCA's encoder's
Flax default, 1e-6 (docs/parity/semseg.md, deliberate differences).
"""

import math

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec

from detpre.data.transforms import sem_seg_aug
from detpre.data.transforms.sem_seg_aug import (
    PhotoMetricDistortion,
    RandomRatioResize,
    build_sem_seg_augmentation,
    photometric_distortion,
)
from detpre.modeling.semseg.fcn_head import FCNHead
from detpre.modeling.semseg.linear_head import LinearSegHead
from detpre.solver.poly_lr import build_poly_lr_scheduler

IGNORE = 255

# ------------------------------------------------------------------------------------------------
# PhotoMetricDistortion: mmseg/datasets/pipelines/transforms.py PhotoMetricDistortion()
# (defaults), its module-level `random` replaced by a replay of the stated draws, on this 2x3 BGR
# image. Draws in mmseg's call order: brightness coin [delta], mode, (mode 1: contrast coin
# [factor]), saturation coin [factor], hue coin [delta], (mode 0: contrast coin [factor]).

SYNTHETIC_BGR = np.array(
    [[[10, 200, 30], [250, 5, 128], [77, 77, 77]], [[0, 0, 255], [128, 64, 32], [255, 255, 255]]],
    dtype=np.uint8,
)

PHOTOMETRIC_FIGURES = [
    # draws [1, 20.5, 1, 1, 1.3, 1, 0.6, 1, 7]: brightness +20.5, mode 1 (contrast 1.3 first),
    # saturation x0.6, hue +7.
    (
        {
            "brightness": 20.5,
            "contrast": 1.3,
            "contrast_first": True,
            "saturation": 0.6,
            "hue": 7,
        },
        [
            [[139, 255, 126], [255, 122, 251], [126, 126, 126]],
            [[118, 150, 255], [192, 124, 117], [255, 255, 255]],
        ],
    ),
    # draws [1, -12.25, 0, 1, 1.4, 1, -15, 1, 0.7]: brightness -12.25, mode 0, saturation x1.4,
    # hue -15, then contrast 0.7 last.
    (
        {
            "brightness": -12.25,
            "contrast": 0.7,
            "contrast_first": False,
            "saturation": 1.4,
            "hue": -15,
        },
        [
            [[0, 130, 78], [165, 5, 0], [44, 44, 44]],
            [[84, 0, 169], [80, 67, 0], [169, 169, 169]],
        ],
    ),
]


@pytest.mark.parametrize("params, expected", PHOTOMETRIC_FIGURES)
def test_photometric_distortion_is_mmsegs_on_bgr(params, expected):
    out = photometric_distortion(SYNTHETIC_BGR.copy(), dict(params, bgr=True))
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.uint8))


@pytest.mark.parametrize("params, expected", PHOTOMETRIC_FIGURES)
def test_photometric_distortion_is_mmsegs_on_rgb(params, expected):
    # detpre's configs feed RGB images: the same pixels, channels reversed.
    rgb = np.ascontiguousarray(SYNTHETIC_BGR[:, :, ::-1])
    out = photometric_distortion(rgb, dict(params, bgr=False))
    np.testing.assert_array_equal(out[:, :, ::-1], np.array(expected, dtype=np.uint8))


# The draws mmseg's PhotoMetricDistortion made for each figure, in its order (brightness coin and
# delta, mode, [mode 1: contrast coin and factor], saturation coin and factor, hue coin and delta,
# [mode 0: contrast coin and factor]).
PHOTOMETRIC_DRAWS = [[1, 20.5, 1, 1, 1.3, 1, 0.6, 1, 7], [1, -12.25, 0, 1, 1.4, 1, -15, 1, 0.7]]


@pytest.mark.parametrize("index", range(len(PHOTOMETRIC_FIGURES)))
def test_photometric_distortion_class_maps_its_draws_like_mmseg(monkeypatch, index):
    draws = iter(PHOTOMETRIC_DRAWS[index])
    monkeypatch.setattr(sem_seg_aug.np.random, "randint", lambda *a: next(draws))
    monkeypatch.setattr(sem_seg_aug.np.random, "uniform", lambda *a: next(draws))
    rgb = np.ascontiguousarray(SYNTHETIC_BGR[:, :, ::-1])
    out = PhotoMetricDistortion(image_format="RGB").get_transform(rgb).apply_image(rgb.copy())
    expected = np.array(PHOTOMETRIC_FIGURES[index][1], np.uint8)
    np.testing.assert_array_equal(out[:, :, ::-1], expected)
    assert next(draws, None) is None  # every draw used, none more


# ------------------------------------------------------------------------------------------------
# Resize: mmseg's Resize(img_scale=IMG_SCALE, ratio_range=(0.5, 2.0)) (keep_ratio) on a zero image
# of (h, w), np.random.random_sample patched to u (ratio = u * 1.5 + 0.5 by random_sample_ratio),
# then mmcv.imrescale; the figure is the output image's (h, w). u in (0, 0.3, 0.6789, 1).

RESIZE_FIGURES = [
    # (img_scale, h, w, ratio, new_h, new_w)
    ((2048, 512), 512, 683, 0.5, 256, 342),
    ((2048, 512), 512, 683, 0.95, 486, 648),
    ((2048, 512), 512, 683, 1.5183499999999999, 777, 1037),
    ((2048, 512), 512, 683, 2.0, 1024, 1366),
    ((2048, 512), 683, 512, 0.5, 342, 256),
    ((2048, 512), 683, 512, 1.5183499999999999, 1037, 777),
    ((2048, 512), 100, 1000, 0.5, 102, 1024),
    ((2048, 512), 100, 1000, 0.95, 195, 1945),
    ((2048, 512), 100, 1000, 2.0, 410, 4096),
    ((2048, 512), 1000, 100, 1.5183499999999999, 3109, 311),
    ((2048, 512), 333, 333, 0.95, 486, 486),
    ((2049, 1025), 375, 500, 0.5, 512, 683),
    ((2049, 1025), 375, 500, 0.95, 973, 1297),
    ((2049, 1025), 375, 500, 2.0, 2050, 2733),
    ((2049, 1025), 500, 375, 1.5183499999999999, 2075, 1556),
    ((2049, 1025), 1024, 2048, 1.5183499999999999, 1556, 3111),
    ((2049, 1025), 1024, 2048, 2.0, 2049, 4098),
    ((2049, 1025), 2048, 1024, 0.95, 1946, 973),
]

# Exact .5 ties (e.g. 294 * 1599 / 1476 = 318.5): mmcv's w * (L / max(h, w)) and Detectron2's
# ResizeShortestEdge arithmetic round the float product to opposite sides. In 21,968 random
# (h, w, ratio) cases per scale, 1 differs for (2048, 512), 28 for (2049, 1025), 1 for (768, 192);
# every one an exact tie, one side off by 1 pixel.
RESIZE_TIES = [
    ((2048, 512), 1476, 294, 0.7809077861694169, 1599, 319),
    ((2049, 1025), 56, 14, 1.9474985420273565, 3990, 998),
    ((2049, 1025), 109, 436, 1.7540675040471043, 899, 3594),
]


def _detpre_resized_size(monkeypatch, img_scale, h, w, ratio):
    monkeypatch.setattr(sem_seg_aug.np.random, "uniform", lambda lo, hi: ratio)
    aug = RandomRatioResize(min(img_scale), max(img_scale), (0.5, 2.0))
    t = aug.get_transform(np.zeros((h, w, 3), dtype=np.uint8))
    return t.new_h, t.new_w


@pytest.mark.parametrize("img_scale, h, w, ratio, new_h, new_w", RESIZE_FIGURES)
def test_ratio_resize_sizes_are_mmsegs(monkeypatch, img_scale, h, w, ratio, new_h, new_w):
    assert _detpre_resized_size(monkeypatch, img_scale, h, w, ratio) == (new_h, new_w)


@pytest.mark.parametrize("img_scale, h, w, ratio, new_h, new_w", RESIZE_TIES)
def test_ratio_resize_ties_round_as_mmcv(monkeypatch, img_scale, h, w, ratio, new_h, new_w):
    assert _detpre_resized_size(monkeypatch, img_scale, h, w, ratio) == (new_h, new_w)


# ------------------------------------------------------------------------------------------------
# RandomCrop: mmseg's RandomCrop(crop_size=(4, 4), cat_max_ratio=0.75, ignore_index=255) on this
# label, np.random.randint patched to replay (offset_h, offset_w) candidates; the figure is the
# crop mmseg returned (the first candidate no class of which covers 75 % of the labelled pixels).

CROP_LABEL = np.array(
    [[IGNORE] * 8] + [[0, 0, 0, 0, 1, 1, 1, 1]] * 5 + [[2] * 8] * 2,
    dtype=np.uint8,
)

CROP_FIGURES = [
    # candidates (y, x); mmseg drew 3 and kept (3, 2)
    (
        [(0, 0), (2, 0), (3, 2), (4, 4), (0, 4)] + [(0, 0)] * 6,
        [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]],
    ),
    # mmseg drew 1 and kept (4, 2)
    ([(4, 2)] + [(0, 0)] * 10, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]),
]

# The first 10 candidates all fail: mmseg draws an 11th, unchecked (here (4, 1), which passes);
# (Detectron2's RandomCrop_CategoryAreaConstraint would keep its 10th, a rejected one ((2, 4), all
# 1s); detpre's CategoryAreaRandomCrop takes the 11th, as mmseg.)
# On the COCO-derived labels (50 val maps, 20 seeds each) this happened for 23.5 % of crops at
# 192x192 and 31.8 % at 256x256; mmseg's 11th box passed the rule in 5 of those 235 / 318.
CROP_ALL_REJECTED = (
    [(0, 0), (1, 0), (2, 0), (0, 4), (1, 4), (2, 4), (1, 1), (0, 0), (1, 0), (2, 4), (4, 1)],
    [[0, 0, 0, 1], [0, 0, 0, 1], [2, 2, 2, 2], [2, 2, 2, 2]],
)


def _detpre_crop(load_config, monkeypatch, candidates):
    cfg = load_config(
        "configs/semseg/fcn_R50_D8_cpu_coco_sem_seg.yaml", "INPUT.CROP.SIZE", "(4, 4)"
    )
    (crop,) = [
        a
        for a in build_sem_seg_augmentation(cfg, is_train=True)
        if isinstance(a, T.RandomCrop_CategoryAreaConstraint)
    ]
    flat = iter([v for c in candidates for v in c])
    monkeypatch.setattr(np.random, "randint", lambda *a: next(flat))
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    return crop.get_transform(image, CROP_LABEL).apply_segmentation(CROP_LABEL)


@pytest.mark.parametrize("candidates, expected", CROP_FIGURES)
def test_category_area_crop_accepts_mmsegs_candidate(
    load_config, monkeypatch, candidates, expected
):
    out = _detpre_crop(load_config, monkeypatch, candidates)
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.uint8))


def test_category_area_crop_after_ten_rejections_is_mmsegs(load_config, monkeypatch):
    out = _detpre_crop(load_config, monkeypatch, CROP_ALL_REJECTED[0])
    np.testing.assert_array_equal(out, np.array(CROP_ALL_REJECTED[1], dtype=np.uint8))


# ------------------------------------------------------------------------------------------------
# FCN heads: mmseg's FCNHead (mmseg/models/decode_heads/fcn_head.py) with BaseDecodeHead.losses
# (bilinear resize of the logits to the label, CrossEntropyLoss with ignore 255 averaged over all
# pixels), norm_cfg BN, dropout_ratio 0, align_corners False. Every float tensor of its state dict,
# taken in sorted key order (index i over all keys, num_batches_tracked included), is set to
# sin(0.37 * arange(numel) + i) (running_var: |that| + 0.5); input
# x = cos(0.11 * arange(N*C*3*4)).view(1, C, 3, 4); labels arange(48).view(1, 6, 8) % 4 with 3s
# set to 255. Figures: logits at (0, 0) (and (1, 2)) in eval mode, loss in eval mode (running
# stats) and in training mode (batch statistics).

DECODE_KEYS = [
    "conv_cat.bn.bias",
    "conv_cat.bn.num_batches_tracked",
    "conv_cat.bn.running_mean",
    "conv_cat.bn.running_var",
    "conv_cat.bn.weight",
    "conv_cat.conv.weight",
    "conv_seg.bias",
    "conv_seg.weight",
    "convs.0.bn.bias",
    "convs.0.bn.num_batches_tracked",
    "convs.0.bn.running_mean",
    "convs.0.bn.running_var",
    "convs.0.bn.weight",
    "convs.0.conv.weight",
    "convs.1.bn.bias",
    "convs.1.bn.num_batches_tracked",
    "convs.1.bn.running_mean",
    "convs.1.bn.running_var",
    "convs.1.bn.weight",
    "convs.1.conv.weight",
]
AUX_KEYS = [
    "conv_seg.bias",
    "conv_seg.weight",
    "convs.0.bn.bias",
    "convs.0.bn.num_batches_tracked",
    "convs.0.bn.running_mean",
    "convs.0.bn.running_var",
    "convs.0.bn.weight",
    "convs.0.conv.weight",
]

FCN_FIGURES = {
    # FCNHead(in_channels=8, channels=4, num_convs=2, concat_input=True, num_classes=3),
    # loss_weight 1.0
    "decode": {
        "logits_00": [8.786314010620117, 5.267419338226318, -7.685151100158691],
        "logits_12": [14.849857330322266, 3.183333396911621, -14.126627922058105],
        "loss_eval": 8.218770980834961,
        "loss_train": 1.6630948781967163,
    },
    # the auxiliary head's shape: FCNHead(in_channels=6, channels=4, num_convs=1,
    # concat_input=False, num_classes=3), loss_weight 0.4
    "aux": {
        "logits_00": [1.6071441173553467, 0.7153849601745605, -0.8687026500701904],
        "loss_eval": 0.3809775114059448,
        "loss_train": 0.5648103356361389,
    },
}


def _load_figure_weights(branch, keys):
    state = {}
    for i, key in enumerate(keys):
        if key.endswith("num_batches_tracked"):
            continue
        # mmseg's names -> detpre's: convs.i.conv -> convs.i, .bn -> .norm
        name = key.replace(".conv.", ".").replace(".bn.", ".norm.")
        target = branch.state_dict()[name]
        values = torch.sin(torch.arange(target.numel(), dtype=torch.float64) * 0.37 + i).float()
        if key.endswith("running_var"):
            values = values.abs() + 0.5
        state[name] = values.view(target.shape)
    missing, unexpected = branch.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)


def _figure_input(channels):
    x = torch.cos(torch.arange(channels * 12, dtype=torch.float64) * 0.11).float()
    return x.view(1, channels, 3, 4)


def _fcn_head():
    """detpre's FCNHead with the decode figure's branch on "res5" and the aux one on "res4"."""
    head = FCNHead(
        {"res4": ShapeSpec(channels=6, stride=2), "res5": ShapeSpec(channels=8, stride=2)},
        in_feature="res5",
        num_classes=3,
        conv_dims=4,
        num_convs=2,
        concat_input=True,
        dropout=0.0,
        norm="BN",
        conv_dilation=1,
        ignore_value=IGNORE,
        loss_weight=1.0,
        avg_non_ignore=False,
        align_corners=False,
        aux_in_feature="res4",
        aux_conv_dims=4,
        aux_loss_weight=0.4,
    )
    _load_figure_weights(head.decode, DECODE_KEYS)
    _load_figure_weights(head.aux, AUX_KEYS)
    features = {"res4": _figure_input(6), "res5": _figure_input(8)}
    labels = torch.arange(48).view(1, 6, 8) % 4
    labels[labels == 3] = IGNORE
    return head, features, labels


def test_fcn_head_logits_and_losses_are_mmsegs():
    head, features, labels = _fcn_head()
    dec, aux = FCN_FIGURES["decode"], FCN_FIGURES["aux"]
    close = dict(rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        head.eval()
        logits = head.decode(features["res5"])
        aux_logits = head.aux(features["res4"])
        torch.testing.assert_close(logits[0, :, 0, 0].tolist(), dec["logits_00"], **close)
        torch.testing.assert_close(logits[0, :, 1, 2].tolist(), dec["logits_12"], **close)
        torch.testing.assert_close(aux_logits[0, :, 0, 0].tolist(), aux["logits_00"], **close)
        # eval-mode BN (running statistics): the loss alone, as BaseDecodeHead.losses computes it
        loss = head.loss_weight * head._loss(logits, labels)
        aux_loss = head.aux_loss_weight * head._loss(aux_logits, labels)
        assert loss.item() == pytest.approx(dec["loss_eval"], rel=1e-5)
        assert aux_loss.item() == pytest.approx(aux["loss_eval"], rel=1e-5)
        head.train()
        _, losses = head(features, labels)
    assert losses["loss_sem_seg"].item() == pytest.approx(dec["loss_train"], rel=1e-5)
    assert losses["loss_sem_seg_aux"].item() == pytest.approx(aux["loss_train"], rel=1e-5)


# ------------------------------------------------------------------------------------------------
# Segmenter's linear decoder: segm/model/decoder.py DecoderLinear(n_cls=3, patch_size=16,
# d_encoder=4) on the tokens after segm/model/vit.py's final norm (nn.LayerNorm(d_model): eps
# 1e-5), 2x2 token grid (im_size (32, 32)), weights and tokens below; the figure is its (1, 3, 2, 2)
# logits. Two tokens have a tiny variance, where the LayerNorm's eps matters.

SEGMENTER_NORM = ([1.0, 0.5, -1.0, 2.0], [0.1, 0.0, -0.2, 0.3])
SEGMENTER_HEAD = (
    [[0.2, -0.1, 0.0, 0.3], [0.5, 0.5, -0.5, 0.1], [-0.3, 0.2, 0.1, 0.0]],
    [0.0, 0.1, -0.1],
)
SEGMENTER_TOKENS = [
    [0.01, 0.02, -0.01, 0.0],
    [1.0, 2.0, 3.0, 4.0],
    [0.001, -0.002, 0.0, 0.001],
    [-5.0, 0.0, 5.0, 1.0],
]
SEGMENTER_LOGITS = [
    [[-0.126682311296463, 0.6690148115158081], [0.3753955364227295, -0.054937586188316345]],
    [[0.08635087311267853, -0.01068764179944992], [0.33897680044174194, 0.23437902331352234]],
    [[-0.020900577306747437, 0.16304826736450195], [-0.2974419593811035, 0.1518007218837738]],
]


def _linear_head_logits(eps=None):
    head = LinearSegHead(
        {"last_feat": ShapeSpec(channels=4, stride=16)},
        in_feature="last_feat",
        num_classes=3,
        dropout=0.0,
        ignore_value=IGNORE,
        loss_weight=1.0,
        avg_non_ignore=True,
    ).eval()
    if eps is not None:
        head.norm.eps = eps
    with torch.no_grad():
        head.norm.weight.copy_(torch.tensor(SEGMENTER_NORM[0]))
        head.norm.bias.copy_(torch.tensor(SEGMENTER_NORM[1]))
        head.predictor.weight.copy_(torch.tensor(SEGMENTER_HEAD[0])[:, :, None, None])
        head.predictor.bias.copy_(torch.tensor(SEGMENTER_HEAD[1]))
        # tokens in Segmenter's row-major "(h w)" order -> (N, C, h, w)
        feat = torch.tensor(SEGMENTER_TOKENS).T.reshape(1, 4, 2, 2)
        return head.layers({"last_feat": feat})


def test_linear_head_with_segmenters_eps_is_segmenters_decoder():
    torch.testing.assert_close(
        _linear_head_logits(eps=1e-5), torch.tensor([SEGMENTER_LOGITS]), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------------------------------------------
# Poly schedules: the lr that iteration i trains with.
# mmcv PolyLrUpdaterHook(power=0.9, min_lr=1e-4, by_epoch=False) (mmseg's schedule_80k), SGD
# lr 0.01, runner.max_iters 80000, before_train_iter at runner.iter = i.
MMCV_POLY_80K = {
    0: 0.01,
    1: 0.00999988862493039,
    2: 0.009999777249721559,
    1000: 0.009888555069471946,
    40000: 0.005405278639554652,
    79000: 0.00029180247470910614,
    79999: 0.00010038269624970405,
}
# Segmenter's PolynomialLR(step_size=1, iter_warmup=0, iter_max=160000, power=0.9, min_lr=1e-5)
# (segm/train.py's settings), SGD lr 0.001, step_update(num_updates=i) after iteration i - 1.
SEGMENTER_POLY_160K = {
    0: 0.001,
    1: 0.0009999944312482597,
    2: 0.000999988862493039,
    1000: 0.0009944295057644514,
    80000: 0.0005405278639554652,
    159000: 2.027844012210042e-05,
    159999: 1.002050818423225e-05,
}


@pytest.mark.parametrize(
    "config, figures",
    [
        ("configs/semseg/fcn_R50_D8_80k_ade20k.yaml", MMCV_POLY_80K),
        ("configs/semseg/linear_ViT_B_160k_ade20k.yaml", SEGMENTER_POLY_160K),
    ],
)
def test_poly_schedule_is_the_releases(load_config, config, figures):
    cfg = load_config(config)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_poly_lr_scheduler(cfg, optimizer)
    stepped = {}
    for i in range(3):  # the first iterations through real steps
        stepped[i] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for i, lr in figures.items():
        if i < 3:
            got = stepped[i]
        else:
            scheduler.last_epoch = i
            (got,) = scheduler.get_lr()
        assert math.isclose(got, lr, rel_tol=1e-12, abs_tol=0.0), (i, got, lr)
