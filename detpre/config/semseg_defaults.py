"""
Keys of semantic-segmentation transfer (``configs/semseg``): Detectron2's ``SemanticSegmentor``
with mmseg's FCN head on a dilated ResNet, Detectron2's ``SemSegFPNHead`` on R50-FPN, or
Segmenter's linear decoder on a ViT.

Detectron2's DeepLab keys (``MODEL.RESNETS.RES4_DILATION`` / ``RES5_MULTI_GRID`` / ``STEM_TYPE``,
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, ``SOLVER.POLY_LR_POWER``, ...) are added too, since the
dilated backbone, the category-area crop and the poly schedule are DeepLab's parts.
"""

from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config

__all__ = ["add_semseg_config"]


def add_semseg_config(cfg):
    """
    Add the ``SEMSEG`` node and Detectron2's DeepLab keys, in place.

    Args:
        cfg (CfgNode): a Detectron2 config.
    """
    add_deeplab_config(cfg)
    # DeepLab's default is its deep stem; detpre's ResNets (and torchvision's) have the basic one.
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"
    # DeepLab's default; FCN's loss is plain cross-entropy.
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    _C = cfg
    _C.SEMSEG = CN()
    # mmseg's dilated ResNet ("contract_dilation"): the first block of a dilated stage uses half
    # the stage's dilation (res4: 1, 2, 2, ...; res5: 2, 4, 4), as mmseg's FCN R50-D8 builds it.
    _C.SEMSEG.CONTRACT_DILATION = True
    # FCN head (mmseg's FCNHead): number of 3x3 conv-norm-ReLU layers on the input feature.
    _C.SEMSEG.NUM_CONVS = 2
    # FCN head: concatenate the input feature to the convs' output, then one more 3x3 conv.
    _C.SEMSEG.CONCAT_INPUT = True
    # FCN head: dilation of its 3x3 convs (6 in the MoCo VOC / Cityscapes protocol's head).
    _C.SEMSEG.CONV_DILATION = 1
    # Bilinear upsampling of the logits with align_corners (mmseg: False for FCN-D8, True for the
    # FCN-D16 "moco" configs of SlotCon's VOC and Cityscapes protocol).
    _C.SEMSEG.ALIGN_CORNERS = False
    # Dropout2d probability before the 1x1 classifier (FCN and linear heads).
    _C.SEMSEG.DROPOUT = 0.1
    # Backbone feature of the auxiliary FCN head (one conv), "" for none: mmseg's FCN R50-D8
    # puts one on res4.
    _C.SEMSEG.AUX_IN_FEATURE = "res4"
    # Channels of the auxiliary head's conv.
    _C.SEMSEG.AUX_CONVS_DIM = 256
    # Weight of the auxiliary head's loss.
    _C.SEMSEG.AUX_LOSS_WEIGHT = 0.4
    # Cross-entropy reduction: False averages over every pixel of the batch, ignored ones
    # included (mmseg's default, avg_non_ignore=False); True over the labelled pixels only
    # (Detectron2's SemSegFPNHead).
    _C.SEMSEG.LOSS_AVG_NON_IGNORE = False
    # The poly schedule's floor (mmseg's and Segmenter's min_lr): with SOLVER.LR_SCHEDULER_NAME
    # "WarmupPolyLR" the lr is (BASE_LR - POLY_LR_END) * (1 - iter / MAX_ITER) ** POLY_LR_POWER
    # + POLY_LR_END.
    _C.SOLVER.POLY_LR_END = 0.0
    # Keep the backbone fixed (requires_grad False, eval mode): the linear probe of a ViT.
    _C.SEMSEG.FREEZE_BACKBONE = False
    # Training resize (mmseg's Resize with keep_ratio and ratio_range): a ratio r is drawn
    # uniformly in RESIZE_RATIO_RANGE and the image is scaled so that its short side is
    # TRAIN_SCALE[0] * r, unless its long side would pass TRAIN_SCALE[1] * r.
    _C.SEMSEG.TRAIN_SCALE = (512, 2048)
    # See SEMSEG.TRAIN_SCALE.
    _C.SEMSEG.RESIZE_RATIO_RANGE = (0.5, 2.0)
    # mmseg's PhotoMetricDistortion (brightness, contrast, saturation, hue) after the crop.
    _C.SEMSEG.PHOTOMETRIC_DISTORTION = True
