"""
detpre's InsLoc / MoCo-v2 configs against the official releases' configs. Every expected value
below is read off a release file (named in each test), not off detpre:

* limbo0000/InstanceLoc: configs/FPN/insloc_fpn_200ep.py (pretraining),
  transfer/detection/configs/{Base-RCNN-FPN,R_50_FPN_1x_supervised,R_50_FPN_1x_pretrained,
  R_50_FPN_{1x,2x}_insloc}.yaml (fine-tuning, on Detectron2 at commit f50ec07, whose defaults
  equal Detectron2 0.7.2's for every key these configs leave unset);
* facebookresearch/moco: detection/configs/{Base-RCNN-C4-BN,coco_R_50_C4_2x(_moco),
  pascal_voc_R_50_C4_24k(_moco)}.yaml, the C4 protocol InsLoc's C4 rows follow.
"""

import math
import os

import pytest
from detectron2.config import get_cfg
from lr_curve import lr_curve

from detpre.config import add_detpre_config
from detpre.engine import derive_schedule

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MEAN, STD = [123.675, 116.280, 103.530], [58.395, 57.120, 57.375]


def _load(path):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", path))
    return cfg


@pytest.mark.parametrize("epochs", [200, 400])
def test_insloc_fpn_pretraining_is_the_releases(epochs):
    cfg = _load(f"pretrain/insloc_R50_FPN_{epochs}ep_imagenet.yaml")
    i, a = cfg.INSLOC, cfg.INPUT.SSL_AUG
    # Data: base_scale (256, 256), fore_scale (128, 255), ratio (0.5, 2.0), scale (0.2, 1.0).
    assert i.BACKGROUND_SIZE == 256 and tuple(i.PASTE_SIZE_RANGE) == (128, 255)
    assert tuple(i.CROP_RATIO) == (0.5, 2.0) and tuple(i.CROP_SCALE) == (0.2, 1.0)
    assert i.COMPOSITION and not i.WHOLE_IMAGE_ROI and i.PER_LEVEL_CONTRAST
    # PixelAugPil (MoCo-v2's), RandomFlip 0.5, Normalize in RGB.
    assert tuple(a.COLOR_JITTER) == (0.4, 0.4, 0.4, 0.1) and a.COLOR_JITTER_PROB == 0.8
    assert a.GRAYSCALE_PROB == 0.2 and tuple(a.BLUR_SIGMA) == (0.1, 2.0) and a.BLUR_PROB == 0.5
    assert a.FLIP_PROB == 0.5
    assert cfg.MODEL.PIXEL_MEAN == MEAN and cfg.MODEL.PIXEL_STD == STD
    assert cfg.INPUT.FORMAT == "RGB"
    # ResNet-50 (style pytorch, BN, frozen_stages -1), FPN 256 with BN, 4 levels.
    m = cfg.MODEL
    assert m.RESNETS.DEPTH == 50 and m.RESNETS.NORM == "BN" and not m.RESNETS.STRIDE_IN_1X1
    assert m.BACKBONE.FREEZE_AT == 0 and m.FPN.NORM == "BN" and m.FPN.OUT_CHANNELS == 256
    assert list(m.ROI_HEADS.IN_FEATURES) == ["p2", "p3", "p4", "p5"]
    # AnchorAugHead: stride 16, scales 2-16 (32-256 px), 5 ratios; rpn_proposal iou_thr 0.5,
    # nms_thr 0.7, nms_pre 4000.
    assert i.BOX_AUG and i.BOX_AUG_STRIDE == 16 and tuple(i.BOX_AUG_SIZES) == (32, 64, 128, 256)
    assert tuple(i.BOX_AUG_ASPECT_RATIOS) == (0.5, 0.75, 1.0, 1.5, 2.0)
    assert (i.BOX_AUG_IOU, i.BOX_AUG_NMS_THRESH, i.BOX_AUG_FALLBACK_TOPK) == (0.5, 0.7, 4000)
    # RoIAlign out_size 7, sample_num 0; ConvFCBBoxInsClsHead: 4 convs with BN, 2 fcs 1024, 128.
    assert i.POOLER_RESOLUTION == 7 and i.POOLER_SAMPLING_RATIO == 0
    box = m.ROI_BOX_HEAD
    assert (box.NUM_CONV, box.CONV_DIM, box.NUM_FC, box.FC_DIM, box.NORM) == (4, 256, 1, 1024, "BN")
    assert cfg.SSL.PROJ_HIDDEN_DIM == 1024 and cfg.SSL.PROJ_DIM == 128 and i.RELEASE_INIT
    # momentum_cfg: dim 128, K 65536, m 0.999, T 0.2; shuffle_data img and bbox.
    s = cfg.SSL
    assert (s.QUEUE_SIZE, s.MOMENTUM, s.TEMPERATURE) == (65536, 0.999, 0.2)
    assert not s.MOMENTUM_COSINE and s.SHUFFLE_BN and s.EXPORT == "online"
    # SGD lr 0.03 at 8 x 32 images, momentum 0.9, weight decay 1e-4 (every parameter),
    # Nesterov; cosine to 0 with no warm-up; total_epochs.
    o = cfg.SOLVER
    assert (o.BASE_LR, s.REFERENCE_BATCH_SIZE, o.IMS_PER_BATCH) == (0.03, 256, 256)
    assert (o.MOMENTUM, o.WEIGHT_DECAY, o.WEIGHT_DECAY_NORM, o.NESTEROV) == (0.9, 1e-4, 1e-4, True)
    assert s.OPTIMIZER == "SGD" and o.LR_SCHEDULER_NAME == "WarmupCosineLR"
    assert o.BASE_LR_END == 0.0 and o.WARMUP_ITERS == 0 and s.EPOCHS == epochs


@pytest.mark.parametrize("arch", ["C4", "FPN"])
def test_moco_v2_pretraining_is_mocos(arch):
    """main_moco.py with MoCo-v2's flags (--mlp --moco-t 0.2 --aug-plus --cos): lr 0.03 at 256,
    momentum 0.9, weight decay 1e-4, plain SGD, 200 epochs, K 65536, m 0.999, MLP 2048 ->
    2048 -> 128, RandomResizedCrop(224, scale=(0.2, 1.0)) with torchvision's ratio (3/4, 4/3)."""
    cfg = _load(f"pretrain/moco_v2_R50_{arch}_200ep_imagenet.yaml")
    s, o = cfg.SSL, cfg.SOLVER
    assert (o.BASE_LR, s.REFERENCE_BATCH_SIZE, o.MOMENTUM, o.WEIGHT_DECAY) == (0.03, 256, 0.9, 1e-4)
    assert not o.NESTEROV and s.EPOCHS == 200 and s.MAPPER == "TwoCropsMapper"
    assert (s.QUEUE_SIZE, s.MOMENTUM, s.TEMPERATURE) == (65536, 0.999, 0.2)
    assert (s.PROJ_HIDDEN_DIM, s.PROJ_DIM) == (2048, 128)
    assert cfg.MOCO.CROP_SIZE == 224 and tuple(cfg.MOCO.CROP_SCALE) == (0.2, 1.0)
    assert tuple(cfg.MOCO.CROP_RATIO) == pytest.approx((3 / 4, 4 / 3))


@pytest.mark.parametrize("schedule,steps,max_iter", [("1x", (60000, 80000), 90000), ("2x", (120000, 160000), 180000)])  # fmt: skip
@pytest.mark.parametrize("insloc", [True, False])
def test_fpn_transfer_is_the_releases(schedule, steps, max_iter, insloc):
    """R_50_FPN_{1x,2x}_insloc.yaml (InsLoc) and R_50_FPN_{1x,2x}_pretrained.yaml (other rows)."""
    suffix = "_insloc" if insloc else ""
    cfg = _load(f"finetune/mask_rcnn_R50_FPN_{schedule}_coco{suffix}.yaml")
    m = cfg.MODEL
    head = "FastRCNNConvFCHeadExtraNorm" if insloc else "FastRCNNConvFCHead"
    assert m.ROI_BOX_HEAD.NAME == head and m.MASK_ON and m.BACKBONE.FREEZE_AT == 0
    assert (m.ROI_BOX_HEAD.NUM_CONV, m.ROI_BOX_HEAD.NUM_FC, m.ROI_BOX_HEAD.POOLER_RESOLUTION) == (
        4,
        1,
        7,
    )
    for node in (m.RESNETS, m.FPN, m.ROI_BOX_HEAD, m.ROI_MASK_HEAD):
        assert node.NORM == "SyncBN"
    assert m.PIXEL_MEAN == MEAN and m.PIXEL_STD == STD and not m.RESNETS.STRIDE_IN_1X1
    assert cfg.INPUT.FORMAT == "RGB" and m.RESNETS.DEPTH == 50
    assert [list(x) for x in m.ANCHOR_GENERATOR.SIZES] == [[32], [64], [128], [256], [512]]
    assert list(m.RPN.IN_FEATURES) == ["p2", "p3", "p4", "p5", "p6"]
    assert (m.RPN.PRE_NMS_TOPK_TRAIN, m.RPN.PRE_NMS_TOPK_TEST) == (2000, 1000)
    assert (m.RPN.POST_NMS_TOPK_TRAIN, m.RPN.POST_NMS_TOPK_TEST) == (1000, 1000)
    assert m.ROI_MASK_HEAD.NUM_CONV == 4 and m.ROI_MASK_HEAD.POOLER_RESOLUTION == 14
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 672, 704, 736, 768, 800)
    assert cfg.INPUT.MIN_SIZE_TEST == 800 and cfg.TEST.PRECISE_BN.ENABLED
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.02)
    assert tuple(cfg.SOLVER.STEPS) == steps and cfg.SOLVER.MAX_ITER == max_iter
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    # The CPU-sized config of the main job keeps the choice of head.
    cpu = _load(f"finetune/mask_rcnn_R50_FPN_cpu_coco_tiny{suffix}.yaml")
    assert cpu.MODEL.ROI_BOX_HEAD.NAME == head and cpu.MODEL.ROI_BOX_HEAD.NUM_FC == 1


@pytest.mark.parametrize(
    "name,voc",
    [
        ("mask_rcnn_R50_C4_2x_coco.yaml", False),
        ("mask_rcnn_R50_C4_1x_coco.yaml", False),
        ("faster_rcnn_R50_C4_24k_voc0712.yaml", True),
    ],
)
def test_c4_transfer_is_mocos(name, voc):
    """Base-RCNN-C4-BN.yaml + coco_R_50_C4_2x_moco.yaml / pascal_voc_R_50_C4_24k_moco.yaml."""
    cfg = _load("finetune/" + name)
    m = cfg.MODEL
    assert m.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm" and m.RESNETS.NORM == "naiveSyncBN"
    assert (m.RPN.PRE_NMS_TOPK_TEST, m.RPN.POST_NMS_TOPK_TEST) == (6000, 1000)
    assert m.BACKBONE.FREEZE_AT == 0 and cfg.TEST.PRECISE_BN.ENABLED
    assert m.PIXEL_MEAN == MEAN and m.PIXEL_STD == STD and not m.RESNETS.STRIDE_IN_1X1
    assert cfg.INPUT.FORMAT == "RGB" and list(m.RESNETS.OUT_FEATURES) == ["res4"]
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.02)
    assert cfg.INPUT.MIN_SIZE_TEST == 800
    if voc:
        assert not m.MASK_ON and m.ROI_HEADS.NUM_CLASSES == 20
        assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == tuple(range(480, 801, 32))
        assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")
        assert cfg.DATASETS.TEST == ("voc_2007_test",)
        assert tuple(cfg.SOLVER.STEPS) == (18000, 22000) and cfg.SOLVER.MAX_ITER == 24000
        assert cfg.SOLVER.WARMUP_ITERS == 100
    else:
        assert m.MASK_ON and tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 672, 704, 736, 768, 800)
        assert cfg.DATASETS.TRAIN == ("coco_2017_train",)


def test_cosine_schedule_against_the_releases_per_epoch_cosine():
    """The release's lr_config (policy CosineAnealing, min_lr 0, by_epoch True, mmcv 0.6)
    sets lr = 0.03 * (1 + cos(pi * epoch / 200)) / 2 once per epoch; MoCo's --cos does the same.
    detpre's Detectron2 WarmupCosineLR moves every iteration: the same curve at each epoch's
    start, and a mean lr lower by 0.5 / EPOCHS of the peak (0.25 % at 200 epochs)."""
    cfg = derive_schedule(_load("pretrain/insloc_R50_FPN_200ep_imagenet.yaml"), num_images=2560)
    per_epoch = 10  # 2560 images at 256
    assert cfg.SOLVER.MAX_ITER == 200 * per_epoch and cfg.SOLVER.BASE_LR == pytest.approx(0.03)
    ours = lr_curve(cfg)
    release = [0.03 * (1 + math.cos(math.pi * (it // per_epoch) / 200)) / 2 for it in range(2000)]
    for epoch in range(200):  # equal at the start of every epoch
        assert ours[epoch * per_epoch] == pytest.approx(release[epoch * per_epoch], abs=1e-9)
    gap = (sum(release) - sum(ours)) / len(ours) / 0.03
    assert 0 < gap < 0.5 / 200 + 1e-4
