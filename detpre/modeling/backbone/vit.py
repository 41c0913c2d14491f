"""
The ViTDet backbone (Li et al., "Exploring Plain Vision Transformer Backbones for Object
Detection", ECCV 2022) built from yacs keys, so a ``GeneralizedRCNN`` built from a config file has
the state-dict keys of Detectron2's ViTDet lazy configs (``backbone.net.*``, ``backbone.simfp_*``).
"""

from functools import partial

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT
from torch import nn

__all__ = ["build_vit", "build_vitdet_backbone"]

# ViTDet's (and MAE's) LayerNorm epsilon.
_LN_EPS = 1e-6


def build_vit(cfg, input_shape=None):
    """
    Detectron2's plain ViT from ``MODEL.VIT.*``.

    Args:
        cfg (CfgNode): a config with ``MODEL.VIT``.
        input_shape (ShapeSpec or None): input channels (3 when None).

    Returns:
        ViT: its output is ``{MODEL.VIT.OUT_FEATURE: (N, EMBED_DIM, H / PATCH, W / PATCH)}``.
    """
    v = cfg.MODEL.VIT
    depth = v.DEPTH
    for key in ("WINDOW_BLOCK_INDEXES", "RESIDUAL_BLOCK_INDEXES"):
        bad = [i for i in v[key] if not 0 <= i < depth]
        if bad:
            raise ValueError(
                f"MODEL.VIT.{key} {list(v[key])} names blocks {bad} of a depth-{depth} ViT"
            )
    if v.EMBED_DIM % v.NUM_HEADS:
        raise ValueError(
            f"MODEL.VIT.EMBED_DIM {v.EMBED_DIM} is not divisible by MODEL.VIT.NUM_HEADS "
            f"{v.NUM_HEADS}"
        )
    if v.PRETRAIN_IMG_SIZE % v.PATCH_SIZE:
        raise ValueError(
            f"MODEL.VIT.PRETRAIN_IMG_SIZE {v.PRETRAIN_IMG_SIZE} is not a multiple of "
            f"MODEL.VIT.PATCH_SIZE {v.PATCH_SIZE}"
        )
    return ViT(
        img_size=v.IMG_SIZE,
        patch_size=v.PATCH_SIZE,
        in_chans=3 if input_shape is None else input_shape.channels,
        embed_dim=v.EMBED_DIM,
        depth=depth,
        num_heads=v.NUM_HEADS,
        mlp_ratio=v.MLP_RATIO,
        qkv_bias=v.QKV_BIAS,
        drop_path_rate=v.DROP_PATH_RATE,
        norm_layer=partial(nn.LayerNorm, eps=_LN_EPS),
        use_abs_pos=v.USE_ABS_POS,
        use_rel_pos=v.USE_REL_POS,
        rel_pos_zero_init=v.REL_POS_ZERO_INIT,
        window_size=v.WINDOW_SIZE,
        window_block_indexes=list(v.WINDOW_BLOCK_INDEXES),
        residual_block_indexes=list(v.RESIDUAL_BLOCK_INDEXES),
        pretrain_img_size=v.PRETRAIN_IMG_SIZE,
        pretrain_use_cls_token=v.PRETRAIN_USE_CLS_TOKEN,
        out_feature=v.OUT_FEATURE,
    )


@BACKBONE_REGISTRY.register()
def build_vitdet_backbone(cfg, input_shape=None):
    """
    ViTDet's backbone: ``SimpleFeaturePyramid(net=ViT(...))`` with a max-pool top block, as
    ``common/models/mask_rcnn_vitdet.py`` builds it; outputs p2-p6 (strides 4-64) with
    ``MODEL.SIMPLE_FEATURE_PYRAMID.OUT_CHANNELS`` channels.

    Args:
        cfg (CfgNode): a config with ``MODEL.VIT`` and ``MODEL.SIMPLE_FEATURE_PYRAMID``.
        input_shape (ShapeSpec or None): input channels.

    Returns:
        SimpleFeaturePyramid
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    sfp = cfg.MODEL.SIMPLE_FEATURE_PYRAMID
    return SimpleFeaturePyramid(
        net=build_vit(cfg, input_shape),
        in_feature=cfg.MODEL.VIT.OUT_FEATURE,
        out_channels=sfp.OUT_CHANNELS,
        scale_factors=tuple(sfp.SCALE_FACTORS),
        top_block=LastLevelMaxPool(),
        norm=sfp.NORM,
        square_pad=sfp.SQUARE_PAD,
    )
