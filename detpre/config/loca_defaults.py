"""
Config node of LOCA. ``LOCA`` holds the pretext task; the optimizer, schedule, momentum and export
keys are the shared ``SSL.*`` / ``SOLVER.*`` ones, set in the LOCA YAML files; the ViTDet backbone
keys it pretrains are in :mod:`.vitdet_defaults`.
"""

from detectron2.config import CfgNode as CN

from .vitdet_defaults import add_vitdet_backbone_config


def add_loca_config(cfg):
    """
    LOCA: Caron et al., "Location-Aware Self-Supervised Transformers for Semantic Segmentation",
    2022; also adds the ViTDet backbone keys (:func:`add_vitdet_backbone_config`).
    """
    add_vitdet_backbone_config(cfg)
    _C = cfg
    _C.LOCA = CN()
    # --- Views (LocaViewsMapper) ---
    # Side of the square reference view; the token grid is this over the stride (224 / 16 = 14).
    _C.LOCA.REFERENCE_SIZE = 224
    # Area range of the reference crop, as a fraction of the image.
    _C.LOCA.REFERENCE_SCALE = (0.32, 1.0)
    # Probability of a horizontal flip of the reference (LOCA: never flipped).
    _C.LOCA.REFERENCE_FLIP_PROB = 0.0
    # Side of the large ("random") query.
    _C.LOCA.QUERY_SIZE = 224
    # Area range of the large query crop.
    _C.LOCA.QUERY_SCALE = (0.32, 1.0)
    # Number of small ("focal") queries.
    _C.LOCA.NUM_FOCAL_QUERIES = 9
    # Side of each focal query.
    _C.LOCA.FOCAL_SIZE = 96
    # Area range of each focal query crop.
    _C.LOCA.FOCAL_SCALE = (0.05, 0.32)
    # Aspect-ratio range of every crop (TF's sample_distorted_bounding_box default).
    _C.LOCA.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # How crops are drawn: "tf" as the release (tf.image.sample_distorted_bounding_box: ratio
    # uniform, height uniform, so smaller areas than RandomResizedCrop's), "torchvision" as
    # RandomResizedCrop (area uniform, ratio log-uniform).
    _C.LOCA.CROP_RULE = "tf"
    # Probability of a horizontal flip of each query.
    _C.LOCA.QUERY_FLIP_PROB = 0.5
    # The views' pixel augmentation, in the schema SlotCon's node uses too
    # (detpre/data/transforms/view_aug.py); the blur kernel fraction is INPUT.SSL_AUG's.
    # Colour jitter strengths: brightness, contrast, saturation, hue.
    _C.LOCA.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)
    # Probability of the colour jitter, every view.
    _C.LOCA.COLOR_JITTER_PROB = 0.8
    # Probability of the grayscale conversion, every view.
    _C.LOCA.GRAYSCALE_PROB = 0.2
    # Range of the Gaussian blur sigma, in pixels.
    _C.LOCA.BLUR_SIGMA = (0.1, 2.0)
    # Blur probability of the reference, the large query and each focal query (the evident intent
    # of the release's config), applied only when LOCA.RELEASE_BLUR is False.
    _C.LOCA.BLUR_PROB = (1.0, 0.1, 0.5)
    # Reproduce the release's effective blur, which is none: its config calls random_blur(p)
    # with the probability in the `height` argument (ops.py: random_blur(height=224, p=1.0)), so
    # the kernel side height // 10 is 0, a one-tap identity. False blurs with LOCA.BLUR_PROB.
    _C.LOCA.RELEASE_BLUR = True
    # Solarization probability of the reference, the large query and each focal query.
    _C.LOCA.SOLARIZE_PROB = (0.0, 0.2, 0.0)
    # --- Model (LOCA meta-architecture) ---
    # Fraction of the reference tokens the teacher keeps, as one contiguous run in raster order
    # (int(0.2 * 196) = 39).
    _C.LOCA.REFERENCE_KEEP_RATIO = 0.2
    # Tokens of the large query kept at random (the release's query_max_seqlen); <= 0 keeps all.
    _C.LOCA.QUERY_KEEP_TOKENS = 70
    # Heads of the cross-attention block (the ViT's: 12 for ViT-B).
    _C.LOCA.CROSS_ATTENTION_HEADS = 12
    # Hidden width of the cross-attention block's MLP as a multiple of the token width.
    _C.LOCA.MLP_RATIO = 4.0
    # ResNet trunks: width of the 1x1 projection of the dilated res5 (stride 16) into tokens.
    _C.LOCA.RESNET_TOKEN_DIM = 768
    # Patch-cluster prediction head: hidden width and number of GELU layers of its MLP.
    _C.LOCA.HEAD_HIDDEN_DIM = 2048
    _C.LOCA.HEAD_NUM_LAYERS = 2
    # Width of the normalised bottleneck in front of the prototypes.
    _C.LOCA.HEAD_BOTTLENECK_DIM = 256
    # Number of prototypes (K).
    _C.LOCA.NUM_PROTOTYPES = 4096
    # Temperature of the teacher's softmax before Sinkhorn-Knopp (the release's "sharpening").
    _C.LOCA.TEACHER_TEMPERATURE = 0.05
    # Temperature of the student's cluster predictions.
    _C.LOCA.STUDENT_TEMPERATURE = 0.1
    # Sinkhorn-Knopp iterations on the teacher's assignments (column sums all-reduced).
    _C.LOCA.SINKHORN_ITERS = 3
    # Weight of the patch-cluster loss (its cross-entropy plus the mean-entropy term); 0 trains
    # position prediction alone.
    _C.LOCA.CLUSTER_LOSS_WEIGHT = 1.0
