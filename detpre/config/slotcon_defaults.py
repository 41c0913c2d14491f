"""Config node of SlotCon."""

from detectron2.config import CfgNode as CN


def add_slotcon_config(cfg):
    """
    SlotCon: Wen et al., "Self-Supervised Visual Representation Learning with Semantic Grouping",
    NeurIPS 2022. Shared keys (schedule, optimizer, teacher momentum, export) are in ``SSL``.
    """
    _C = cfg
    _C.SLOTCON = CN()
    # --- views (SlotConViewsMapper) ---
    # Side of each square view (224: res5 maps of 7 x 7).
    _C.SLOTCON.CROP_SIZE = 224
    # Area range of each random-resized crop, as a fraction of the image.
    _C.SLOTCON.CROP_SCALE = (0.08, 1.0)
    # Aspect-ratio range of each crop (sampled log-uniformly).
    _C.SLOTCON.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # The second crop is redrawn until at least this fraction of its area lies in the first one.
    _C.SLOTCON.MIN_OVERLAP = 0.01
    # How many draws of the second crop before falling back to an unconstrained crop.
    _C.SLOTCON.OVERLAP_TRIES = 10
    # The views' pixel augmentation (BYOL's asymmetric recipe), in the schema LOCA's node uses too
    # (detpre/data/transforms/view_aug.py). Flip probability and blur kernel are INPUT.SSL_AUG's.
    # Colour jitter strengths (brightness, contrast, saturation, hue), both views.
    _C.SLOTCON.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)
    # Probability of the colour jitter, both views.
    _C.SLOTCON.COLOR_JITTER_PROB = 0.8
    # Probability of the grayscale conversion, both views.
    _C.SLOTCON.GRAYSCALE_PROB = 0.2
    # Range of the Gaussian blur sigma, in pixels.
    _C.SLOTCON.BLUR_SIGMA = (0.1, 2.0)
    # Gaussian blur probability of the first and the second view.
    _C.SLOTCON.BLUR_PROB = (1.0, 0.1)
    # Solarization probability (threshold 128) of the first and the second view.
    _C.SLOTCON.SOLARIZE_PROB = (0.0, 0.2)
    # --- model ---
    # Hidden width of the projector (1x1 convs on res5) and of the slot predictor MLP.
    _C.SLOTCON.HIDDEN_DIM = 4096
    # Output width of the projector: the dimension of pixels, prototypes and slots.
    _C.SLOTCON.OUT_DIM = 256
    # Norm of the projector and predictor layers (a Detectron2 norm name; "SyncBN" as released,
    # "BN" for one process, "naiveSyncBN" for several CPU processes).
    _C.SLOTCON.HEAD_NORM = "SyncBN"
    # Number of learnable prototypes K (256 for COCO, 2048 for ImageNet).
    _C.SLOTCON.NUM_PROTOTYPES = 256
    # Temperature of the teacher's assignments (also the attention temperature of the slots).
    _C.SLOTCON.TEACHER_TEMP = 0.07
    # Temperature of the student's assignments.
    _C.SLOTCON.STUDENT_TEMP = 0.1
    # EMA momentum of the centre subtracted from the teacher's logits.
    _C.SLOTCON.CENTER_MOMENTUM = 0.9
    # Temperature of the slot InfoNCE (the loss is also scaled by 2 x this).
    _C.SLOTCON.CONTRAST_TEMP = 0.2
    # Weight of the grouping loss; the slot contrast gets 1 minus this.
    _C.SLOTCON.GROUP_LOSS_WEIGHT = 0.5
    # Start every bottleneck's last norm at weight 0 (the release's models/resnet.py: "zero gamma
    # for batch norm"); False keeps Detectron2's weight 1.
    _C.SLOTCON.ZERO_INIT_RESIDUAL = True
