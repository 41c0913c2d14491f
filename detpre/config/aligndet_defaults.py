"""Config node of AlignDet (box-domain pretraining of the whole detector)."""

from detectron2.config import CfgNode as CN


def add_aligndet_config(cfg):
    """AlignDet: Li et al., "AlignDet: Aligning Pre-training and Fine-tuning in Object Detection", ICCV 2023."""
    _C = cfg
    _C.ALIGNDET = CN()
    # Keep the image-domain backbone (MODEL.WEIGHTS) fixed: no gradient, BN in eval mode. For
    # R50-FPN that is the bottom-up ResNet (the FPN trains); for R50-C4 the stem and res2-res4
    # (res5 is the C4 box head and trains).
    _C.ALIGNDET.FREEZE_BACKBONE = True
    # A run with FREEZE_BACKBONE and an empty MODEL.WEIGHTS (a random backbone kept fixed) is
    # refused at start-up unless this is True (tests, ablations).
    _C.ALIGNDET.ALLOW_RANDOM_FROZEN_BACKBONE = False
    # Softmax temperature of the box-level InfoNCE.
    _C.ALIGNDET.TEMPERATURE = 0.5
    # A RoI (RPN proposal or proposal box) takes the id of the proposal it overlaps most when
    # their IoU is at least this; only such RoIs are kept (positive-only sampling).
    _C.ALIGNDET.MATCH_IOU = 0.5
    # At most this many matched RoIs per image, drawn at random (the release samples 4096).
    _C.ALIGNDET.ROIS_PER_IMAGE = 4096
    # Hidden and output width of the projector that replaces the classifier (1024 -> 1024 ->
    # 256 on the 4conv1fc head; the hidden width follows the head's output when 0).
    _C.ALIGNDET.PROJ_HIDDEN_DIM = 0
    _C.ALIGNDET.PROJ_DIM = 256
    # Weights of the contrastive and box-regression losses (the RPN losses keep weight 1).
    _C.ALIGNDET.CONTRAST_WEIGHT = 1.0
    _C.ALIGNDET.BOX_REG_WEIGHT = 1.0
    # Use at most this many proposals per image (the first ones of the file); <= 0 keeps all
    # (the release: all for R-CNN, the first 50 for RetinaNet).
    _C.ALIGNDET.MAX_PROPOSALS = 0
    # AlignDetRetinaNet: fill each image's ROIS_PER_IMAGE sampled anchors, after the matched ones,
    # with background anchors (matcher label 0), which enter the contrast as negatives only (the
    # release's RandomSampler, num 2048, pos_fraction 1).
    _C.ALIGNDET.BACKGROUND_NEGATIVES = True
    # Export the pretrained box regressor (R-CNN: roi_heads.box_predictor.bbox_pred, class-
    # agnostic; RetinaNet: head.bbox_pred). The release drops it (extract_detector_weights.py)
    # and fine-tunes a fresh class-specific one; True needs a class-agnostic fine-tuning head
    # (*_aligndet_agnostic.yaml, with its baseline *_agnostic.yaml).
    _C.ALIGNDET.EXPORT_BOX_REGRESSOR = False
    # Views: the shorter side drawn from these sizes, the longer side at most MAX_SIZE (the
    # release: 640 to 800 step 32, 1333), a horizontal flip with FLIP_PROB, then one colour
    # operation of nine (identity, autocontrast, equalize, solarize, colour, contrast, brightness,
    # sharpness, posterize) at a random magnitude below COLOR_MAGNITUDE (of 10). No crop.
    _C.ALIGNDET.MIN_SIZES = (640, 672, 704, 736, 768, 800)
    _C.ALIGNDET.MAX_SIZE = 1333
    _C.ALIGNDET.FLIP_PROB = 0.5
    _C.ALIGNDET.COLOR_MAGNITUDE = 10
