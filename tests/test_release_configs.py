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
from detectron2.modeling import build_model
from lr_curve import lr_curve
from torch import nn

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
    assert o.OPTIMIZER == "SGD" and o.LR_SCHEDULER_NAME == "WarmupCosineLR"
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


@pytest.mark.parametrize(
    "name,prototypes,epochs",
    [
        ("slotcon_R50_C4_800ep_coco.yaml", 256, 800),
        ("slotcon_R50_C4_200ep_imagenet.yaml", 2048, 200),
    ],
)
def test_slotcon_pretraining_is_the_releases(name, prototypes, epochs):
    """CVMI-Lab/SlotCon: scripts/slotcon_{coco_r50_800ep,imagenet_r50_200ep}.sh and the
    defaults of main_pretrain.py (--student-temp 0.1, --center-momentum 0.9); heads from
    models/slotcon.py (DINOHead2d / DINOHead: 3 layers, BN, GELU, trunc-normal 0.02); data from
    data/transforms.py (CustomDataAugmentation)."""
    cfg = _load(f"pretrain/{name}")
    cfg.MODEL.DEVICE = "cpu"
    s, o, sc = cfg.SSL, cfg.SOLVER, cfg.SLOTCON
    # --batch-size 512 --optimizer lars --base-lr 1.0 --weight-decay 1e-5 --warmup-epoch 5
    # --warmup-multiplier 100 --epochs; lr = base_lr x batch / 256; SGD momentum 0.9
    assert (o.IMS_PER_BATCH, o.BASE_LR, s.REFERENCE_BATCH_SIZE) == (512, 1.0, 256)
    assert o.OPTIMIZER == "LARS" and o.WEIGHT_DECAY == 1e-5 and o.MOMENTUM == 0.9
    assert s.WARMUP_EPOCHS == 5 and o.WARMUP_FACTOR == 0.01 and s.EPOCHS == epochs
    assert o.BASE_LR_END == 1e-6 and not s.SCALE_LR_END and o.RESCALE_INTERVAL and s.DROP_LAST
    assert o.AMP.ENABLED  # --fp16
    # --dim-hidden 4096 --dim-out 256 --num-prototypes --teacher-momentum 0.99 --teacher-temp
    # 0.07 --group-loss-weight 0.5; ctr_loss_filtered tau 0.2
    assert (sc.HIDDEN_DIM, sc.OUT_DIM, sc.NUM_PROTOTYPES) == (4096, 256, prototypes)
    assert (s.MOMENTUM, s.MOMENTUM_COSINE, s.EXPORT) == (0.99, True, "momentum")
    assert (sc.TEACHER_TEMP, sc.STUDENT_TEMP, sc.CENTER_MOMENTUM) == (0.07, 0.1, 0.9)
    assert (sc.GROUP_LOSS_WEIGHT, sc.CONTRAST_TEMP) == (0.5, 0.2) and sc.ZERO_INIT_RESIDUAL
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and sc.HEAD_NORM == "SyncBN"
    # CustomTwoCrop(224, (0.08, 1)), conditioned: >= 1 % of the second crop in the first, 10 tries
    assert (sc.CROP_SIZE, tuple(sc.CROP_SCALE)) == (224, (0.08, 1.0))
    assert tuple(sc.CROP_RATIO) == pytest.approx((3 / 4, 4 / 3))
    assert (sc.MIN_OVERLAP, sc.OVERLAP_TRIES) == (0.01, 10)
    assert tuple(sc.COLOR_JITTER) == (0.4, 0.4, 0.2, 0.1)
    assert tuple(sc.BLUR_PROB) == (1.0, 0.1) and tuple(sc.SOLARIZE_PROB) == (0.0, 0.2)
    assert (sc.COLOR_JITTER_PROB, sc.GRAYSCALE_PROB, cfg.INPUT.SSL_AUG.FLIP_PROB) == (0.8, 0.2, 0.5)
    assert tuple(sc.BLUR_SIGMA) == (0.1, 2.0)
    assert cfg.MODEL.PIXEL_MEAN == MEAN and cfg.MODEL.PIXEL_STD == STD
    # The heads as built: projector 2048 -> 4096 -> 4096 -> 256 and predictor 256 -> 4096 ->
    # 4096 -> 256, a norm and a GELU after each hidden layer, trunc-normal(0.02) weights.
    cfg.MODEL.RESNETS.NORM, cfg.SLOTCON.HEAD_NORM = "BN", "BN"
    heads = build_model(cfg).ssl_head
    for head, dims in ((heads["projector"], [2048, 4096, 4096, 256]), (heads["predictor"], [256, 4096, 4096, 256])):  # fmt: skip
        convs = list(head.children())
        assert [c.in_channels for c in convs] + [convs[-1].out_channels] == dims
        assert all(isinstance(c.activation, nn.GELU) and c.norm is not None for c in convs[:-1])
        assert convs[-1].activation is None and convs[-1].norm is None
        # nn.init.trunc_normal_(std=0.02) as the release (its cut at +-2 is absolute: no effect)
        assert (
            0.0195 < float(convs[0].weight.std()) < 0.0205 and float(convs[0].bias.abs().max()) == 0
        )
    assert heads["grouping"].prototypes.weight.shape == (prototypes, 256)


@pytest.mark.parametrize("trunk", ["ViT_B", "R50_C4", "R50_FPN"])
def test_loca_pretraining_is_the_releases(trunk):
    """google-research/scenic projects/loca: configs/loca_imnet1k_base16.py (data pipeline,
    model, schedule) and trainer.py (AdamW with weight decay on ndim != 1 parameters, global
    gradient clipping, EMA teacher on the reference)."""
    cfg = _load(f"pretrain/loca_{trunk}_100ep_imagenet.yaml")
    s, o, lo = cfg.SSL, cfg.SOLVER, cfg.LOCA
    # cropflip_generatemask(224, 32, flip=False); inception_crop_with_mask((224, 224), 32, 100,
    # (14, 14)); nine inception_crop_with_mask((96, 96), 5, 32, (6, 6)); flip_with_mask on queries
    assert (lo.REFERENCE_SIZE, tuple(lo.REFERENCE_SCALE), lo.REFERENCE_FLIP_PROB) == (224, (0.32, 1.0), 0.0)  # fmt: skip
    assert (lo.QUERY_SIZE, tuple(lo.QUERY_SCALE), lo.QUERY_FLIP_PROB) == (224, (0.32, 1.0), 0.5)
    assert (lo.NUM_FOCAL_QUERIES, lo.FOCAL_SIZE, tuple(lo.FOCAL_SCALE)) == (9, 96, (0.05, 0.32))
    # tf.image.sample_distorted_bounding_box's default aspect_ratio_range and rule
    assert tuple(lo.CROP_RATIO) == pytest.approx((3 / 4, 4 / 3)) and lo.CROP_RULE == "tf"
    # random_color_jitter(0.8, 0.4, 0.4, 0.2, 0.1), random_grayscale(0.2), random_solarize(0.2)
    # on query0 only, random_blur given its probability as height: no blur
    assert tuple(lo.COLOR_JITTER) == (0.4, 0.4, 0.2, 0.1) and lo.COLOR_JITTER_PROB == 0.8
    assert lo.GRAYSCALE_PROB == 0.2 and tuple(lo.SOLARIZE_PROB) == (0.0, 0.2, 0.0)
    assert lo.RELEASE_BLUR
    # reference_seqlen int(0.2 * 196) consecutive; query_max_seqlen 70; head_output_dim 4096;
    # model.temperature 0.1; sharpening 0.05; apply_cluster_loss
    assert (lo.REFERENCE_KEEP_RATIO, lo.QUERY_KEEP_TOKENS, lo.NUM_PROTOTYPES) == (0.2, 70, 4096)
    assert (lo.STUDENT_TEMPERATURE, lo.TEACHER_TEMPERATURE) == (0.1, 0.05)
    assert lo.CLUSTER_LOSS_WEIGHT == 1.0
    # batch 1024, lr 0.001 x batch / 1024, 100 epochs, 15 warm-up, alpha 0.01, weight decay 0.1,
    # max_grad_norm 1; momentum 0.996 cosine to 1
    assert (o.IMS_PER_BATCH, o.BASE_LR, s.REFERENCE_BATCH_SIZE) == (1024, 0.001, 1024)
    assert (s.EPOCHS, s.WARMUP_EPOCHS, o.WARMUP_FACTOR) == (100, 15, 0.0)
    assert o.BASE_LR_END == pytest.approx(0.01 * o.BASE_LR) and o.RESCALE_INTERVAL
    assert o.OPTIMIZER == "AdamW" and o.WEIGHT_DECAY == 0.1 and tuple(o.ADAMW_BETAS) == (0.9, 0.999)
    clip = o.CLIP_GRADIENTS
    assert clip.ENABLED and (clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE) == ("full_model", 1.0, 2.0)  # fmt: skip
    assert (s.MOMENTUM, s.MOMENTUM_COSINE, s.EXPORT) == (0.996, True, "momentum")
    if trunk == "ViT_B":  # B/16: 768 wide, 12 layers, 12 heads, MLP 3072, stochastic depth 0.1
        v = cfg.MODEL.VIT
        assert (v.PATCH_SIZE, v.EMBED_DIM, v.DEPTH, v.NUM_HEADS) == (16, 768, 12, 12)
        assert v.MLP_RATIO * v.EMBED_DIM == 3072 and v.DROP_PATH_RATE == 0.1
        assert lo.CROSS_ATTENTION_HEADS == 12


@pytest.mark.parametrize(
    "preset,iters,alpha", [("S1", 45000, 1.0), ("S2", 90000, 1.0), ("S3", 90000, 0.5), ("S4", 120000, 0.5)]  # fmt: skip
)
def test_selftrain_schedules_are_the_papers(preset, iters, alpha):
    """Zoph et al. 2020, Sec. 3.2: 640 px, batch 256 (+ 256 pseudo-labeled), weight decay 1e-4,
    lr 0.32 with a cosine decay after a linear warm-up over 1000 steps from 0.0032; Appendix H:
    iterations of the converged supervised runs and the best alpha with ImageNet per preset;
    Appendix B: moving-average decay 0.9997; Sec. 3.2: student initialised by the teacher."""
    from detpre.data.transforms.autoaugment import DetectionAutoAugment, RandAugment
    from detpre.data.transforms.strong_aug import build_strong_augmentation

    cfg = _load(f"selftrain/mask_rcnn_R50_FPN_{preset}_{iters // 1000}k_coco_imagenet.yaml")
    o, st, sa = cfg.SOLVER, cfg.SELF_TRAIN, cfg.INPUT.STRONG_AUG
    assert (o.IMS_PER_BATCH, st.PSEUDO_IMS_PER_BATCH, o.BASE_LR, o.WEIGHT_DECAY) == (256, 256, 0.32, 1e-4)  # fmt: skip
    assert (o.MAX_ITER, st.LOSS_NORM.ALPHA, st.LOSS_NORM.MOMENTUM) == (iters, alpha, 0.9997)
    assert (sa.PRESET, sa.IMAGE_SIZE) == (preset, 640) and cfg.FINETUNE.STRONG_AUG
    assert st.STUDENT_INIT == "teacher" and st.TEACHER_AUG == "student"
    assert st.PSEUDO_LABEL.SCORE_THRESH == 0.5 and st.UNLABELED_DATASETS == ("imagenet_train",)
    lr = lr_curve(cfg) if preset == "S1" else None
    if lr is not None:  # the curve once (45k iterations), against the TF detection code's rule
        # (CosineLearningRateWithLinearWarmup): linear 0.0032 -> 0.32 over 1000 steps, then
        # 0.32 * (1 + cos(pi (t - 1000) / (T - 1000))) / 2
        for t in (0, 1, 500, 999, 1000, 1001, 20000, iters - 1):
            warm = 0.0032 + t / 1000 * (0.32 - 0.0032)
            cos = 0.32 * (1 + math.cos(math.pi * (t - 1000) / (iters - 1000))) / 2
            assert lr[t] == pytest.approx(warm if t < 1000 else cos, abs=1e-6), t
    augs = build_strong_augmentation(cfg, is_train=True)
    kinds = [type(a).__name__ for a in augs]
    scale = next(a for a in augs if type(a).__name__ == "ResizeScale")
    large = preset in ("S3", "S4")
    assert (scale.min_scale, scale.max_scale) == ((0.5, 2.0) if large else (0.8, 1.2))
    assert (scale.target_height, scale.target_width) == (640, 640)
    assert ("DetectionAutoAugment" in kinds) == (preset in ("S2", "S3"))
    rand = [a for a in augs if isinstance(a, RandAugment)]
    assert bool(rand) == (preset == "S4")
    if rand:
        assert rand[0].magnitude == 10 and rand[0].consts == (100.0, 40.0) and rand[0].identity_slot
    assert all(a.policy == "v0" for a in augs if isinstance(a, DetectionAutoAugment))
