"""
Config nodes of the ViTDet backbone (``build_vitdet_backbone`` in
:mod:`detpre.modeling.backbone.vit`). ``MODEL.VIT`` and ``MODEL.SIMPLE_FEATURE_PYRAMID`` describe
Detectron2's ViTDet backbone (``detectron2.modeling.backbone.vit``); their defaults are the stock
ViTDet-B Mask R-CNN (``projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py``).
"""

from detectron2.config import CfgNode as CN


def add_vitdet_backbone_config(cfg):
    """Keys of ``build_vitdet_backbone``: a ViT (``MODEL.VIT``) under a SimpleFeaturePyramid."""
    _C = cfg
    _C.MODEL.VIT = CN()
    # Input size the relative position tables are sized for (ViTDet: 1024, its LSJ crop).
    _C.MODEL.VIT.IMG_SIZE = 1024
    # Side of the square patches (ViT-B/16).
    _C.MODEL.VIT.PATCH_SIZE = 16
    # Token width (ViT-B: 768).
    _C.MODEL.VIT.EMBED_DIM = 768
    # Number of transformer blocks (ViT-B: 12).
    _C.MODEL.VIT.DEPTH = 12
    # Attention heads per block (ViT-B: 12).
    _C.MODEL.VIT.NUM_HEADS = 12
    # Hidden width of each block's MLP as a multiple of EMBED_DIM.
    _C.MODEL.VIT.MLP_RATIO = 4.0
    # Learnable bias in the query / key / value projection.
    _C.MODEL.VIT.QKV_BIAS = True
    # Stochastic depth rate of the last block (linearly increasing from 0; ViTDet-B and LOCA: 0.1).
    _C.MODEL.VIT.DROP_PATH_RATE = 0.1
    # Learned absolute position embeddings, stored at PRETRAIN_IMG_SIZE and resized to the input.
    _C.MODEL.VIT.USE_ABS_POS = True
    # Decomposed relative position biases in the attention (ViTDet: True). Their tables are new in
    # fine-tuning: a checkpoint pretrained without them leaves them at their (zero) initialisation.
    _C.MODEL.VIT.USE_REL_POS = True
    # Initialise the relative position tables to zero.
    _C.MODEL.VIT.REL_POS_ZERO_INIT = True
    # Side of the attention windows of the blocks in WINDOW_BLOCK_INDEXES (ViTDet: 14).
    _C.MODEL.VIT.WINDOW_SIZE = 14
    # Blocks with window attention; the others attend globally (ViTDet-B: global in 2, 5, 8, 11).
    _C.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    # Blocks followed by a convolutional residual block (ViTDet-B: none).
    _C.MODEL.VIT.RESIDUAL_BLOCK_INDEXES = []
    # Image size the absolute position embeddings are stored at (ViTDet: 224).
    _C.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    # The stored position embeddings have one extra leading slot, for a class token (ViTDet's
    # default, MAE's layout). The ViT never has a class token; the slot is only skipped, and
    # keeping it makes the pretrained ``pos_embed`` load into the stock ViTDet configs.
    _C.MODEL.VIT.PRETRAIN_USE_CLS_TOKEN = True
    # Name of the ViT's single output feature.
    _C.MODEL.VIT.OUT_FEATURE = "last_feat"

    _C.MODEL.SIMPLE_FEATURE_PYRAMID = CN()
    # Channels of every pyramid level (ViTDet: 256).
    _C.MODEL.SIMPLE_FEATURE_PYRAMID.OUT_CHANNELS = 256
    # Rescaling of the stride-16 ViT map into levels p2-p5 (ViTDet: 4, 2, 1, 0.5); a max-pool top
    # block adds p6.
    _C.MODEL.SIMPLE_FEATURE_PYRAMID.SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)
    # Norm of the pyramid convs (ViTDet: "LN").
    _C.MODEL.SIMPLE_FEATURE_PYRAMID.NORM = "LN"
    # Pad every batch to this square side (ViTDet: 1024); 0 pads to SCALE_FACTORS' largest stride.
    _C.MODEL.SIMPLE_FEATURE_PYRAMID.SQUARE_PAD = 1024
