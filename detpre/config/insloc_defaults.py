"""
Config node of InsLoc (``INSLOC``).

Every number the paper fixes is a key here, with the paper's value as the default.
"""

from detectron2.config import CfgNode as CN


def add_insloc_config(cfg):
    """InsLoc: Yang et al., "Instance Localization for Self-supervised Detection Pretraining", CVPR 2021."""
    _C = cfg
    _C.INSLOC = CN()
    # Copy-paste composition of a foreground crop onto another image of the dataset. When False
    # the crop itself is the view and its box covers the whole view (Table 3b ablation).
    _C.INSLOC.COMPOSITION = True
    # Area range of each foreground crop, as a fraction of the image.
    _C.INSLOC.CROP_SCALE = (0.2, 1.0)
    # Aspect-ratio range of each crop (sampled log-uniformly).
    _C.INSLOC.CROP_RATIO = (0.5, 2.0)
    # The crop is rescaled, keeping its aspect ratio, so that its long side fits max(w, h) and its
    # short side min(w, h) (mmcv's imrescale rule), w and h drawn from the integers [low, high),
    # high excluded as numpy's randint in the release (fore_scale (128, 255): 128..254).
    _C.INSLOC.PASTE_SIZE_RANGE = (128, 255)
    # Side of the square each background image is resized to.
    _C.INSLOC.BACKGROUND_SIZE = 256
    # Bounding-box augmentation of the query box by a random anchor (the key keeps the true box).
    _C.INSLOC.BOX_AUG = True
    # Stride of the anchor grid used by the box augmentation.
    _C.INSLOC.BOX_AUG_STRIDE = 16
    # Anchor sizes of the box augmentation.
    _C.INSLOC.BOX_AUG_SIZES = (32, 64, 128, 256)
    # Anchor aspect ratios of the box augmentation.
    _C.INSLOC.BOX_AUG_ASPECT_RATIOS = (0.5, 0.75, 1.0, 1.5, 2.0)
    # Candidate anchors are those whose IoU with the true box exceeds this.
    _C.INSLOC.BOX_AUG_IOU = 0.5
    # The candidates get random scores and go through NMS at this IoU; the jittered box is drawn
    # uniformly among the kept ones (the release's rpn_proposal nms_thr).
    _C.INSLOC.BOX_AUG_NMS_THRESH = 0.7
    # When no anchor passes BOX_AUG_IOU, this many anchors of highest IoU are the candidates
    # (the release's rpn_proposal nms_pre).
    _C.INSLOC.BOX_AUG_FALLBACK_TOPK = 4000
    # Pool the whole image instead of the pasted box (architectural alignment only, Table 3b).
    _C.INSLOC.WHOLE_IMAGE_ROI = False
    # FPN: one contrast (and one queue) per level P2-P5; when False only P5 contrasts.
    _C.INSLOC.PER_LEVEL_CONTRAST = True
    # Output side of RoIAlign for the FPN box head (C4 pools 2x this before res5).
    _C.INSLOC.POOLER_RESOLUTION = 7
    # Sampling ratio of RoIAlign.
    _C.INSLOC.POOLER_SAMPLING_RATIO = 0
    # Initialise as the release (InsLocFPN.init_weights): FPN convs and box-head fcs
    # Xavier-uniform, projection Xavier-uniform then normal(0, 0.01); False keeps Detectron2's
    # initialisation of the FPN and box head and PyTorch's of the projection.
    _C.INSLOC.RELEASE_INIT = True
