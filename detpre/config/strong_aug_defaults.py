"""Config node of the strong augmentation presets of noisy-student self-training."""

from detectron2.config import CfgNode as CN


def add_strong_aug_config(cfg):
    """
    INPUT.STRONG_AUG: the strong augmentation presets S1-S4 of Zoph et al., "Rethinking
    Pre-training and Self-training", NeurIPS 2020 (detpre.data.transforms.strong_aug).
    """
    _C = cfg
    _C.INPUT.STRONG_AUG = CN()
    # The training augmentation preset (detpre.data.transforms.strong_aug): "none" (Detectron2's
    # ResizeShortestEdge + flip from INPUT.*), "S1" FlipCrop (flip, scale jitter, crop), "S2"
    # AutoAugment + FlipCrop, "S3" AutoAugment + large scale jitter + crop, "S4" RandAugment +
    # large scale jitter + crop. The paper's strongest, S4, is the default: it finds self-training
    # helps most with the strongest augmentation.
    _C.INPUT.STRONG_AUG.PRESET = "S4"
    # Side of the square output of S1-S4: the image is scaled to fit IMAGE_SIZE x IMAGE_SIZE times
    # the jitter scale, then randomly cropped / padded to IMAGE_SIZE x IMAGE_SIZE (Detectron2's
    # ResizeScale + FixedSizeCrop, as ViTDet's large scale jitter). 1024 as LSJ.
    _C.INPUT.STRONG_AUG.IMAGE_SIZE = 1024
    # Scale jitter range of S1 and S2 (RetinaNet's FlipCrop): (0.8, 1.2) in the paper.
    _C.INPUT.STRONG_AUG.SCALE_RANGE = (0.8, 1.2)
    # Large scale jitter range of S3 and S4: (0.5, 2.0) in the paper.
    _C.INPUT.STRONG_AUG.LARGE_SCALE_RANGE = (0.5, 2.0)
    # Detection AutoAugment policy of S2 and S3 (Zoph et al., ECCV 2020): "v0", the policy of that
    # paper's results, or "v1"; bbox-only ops are left out (see detpre.data.transforms.autoaugment).
    _C.INPUT.STRONG_AUG.AUTOAUG_POLICY = "v0"
    # RandAugment (S4): number of ops applied in sequence, N. The paper does not state it; 2 is
    # RandAugment's usual value.
    _C.INPUT.STRONG_AUG.RANDAUG_NUM_OPS = 2
    # RandAugment (S4): shared magnitude of every op, M in [0, 10]: 10 in the paper.
    _C.INPUT.STRONG_AUG.RANDAUG_MAGNITUDE = 10
    # RandAugment (S4): translation in pixels at M = 10 for a 640 px image (scaled with the
    # image). TF's RandAugment for detection (Model Garden augment.py): 100; detection AutoAugment
    # uses 250.
    _C.INPUT.STRONG_AUG.RANDAUG_TRANSLATE_CONST = 100.0
    # RandAugment (S4): Cutout half-width in pixels at M = 10 for a 640 px image (scaled with the
    # image). TF's RandAugment: 40; detection AutoAugment uses 100.
    _C.INPUT.STRONG_AUG.RANDAUG_CUTOUT_CONST = 40.0
    # RandAugment (S4): each of the N draws picks among the ops plus one no-op slot, as TF's
    # RandAugment (len(ops) + 1 branches, the last the identity).
    _C.INPUT.STRONG_AUG.RANDAUG_IDENTITY_SLOT = True
