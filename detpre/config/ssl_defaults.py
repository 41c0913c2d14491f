"""
Config keys shared by the label-free pretraining methods: ``SSL`` (schedule, momentum copy,
queue, export) and ``INPUT.SSL_AUG`` (the MoCo-v2 pixel augmentation).

Every number the papers fix is a key here, with the paper's value as the default.
"""

from detectron2.config import CfgNode as CN


def add_ssl_config(cfg):
    """Keys shared by every pretraining method (schedule, momentum encoder, queue, export)."""
    _C = cfg
    _C.SSL = CN()
    # Length of pretraining in epochs over the training dataset; SOLVER.MAX_ITER is derived from it
    # (epochs x images / SOLVER.IMS_PER_BATCH) when positive.
    _C.SSL.EPOCHS = 200
    # Linear warm-up length in epochs (converted to SOLVER.WARMUP_ITERS when positive; at 0,
    # SOLVER.WARMUP_ITERS is used as given).
    _C.SSL.WARMUP_EPOCHS = 0.0
    # Epochs at which a step schedule (WarmupMultiStepLR) multiplies the LR by SOLVER.GAMMA
    # (converted to SOLVER.STEPS when given).
    _C.SSL.STEP_EPOCHS = ()
    # The pretext mapper that turns a dataset dict into views (a PRETRAIN_MAPPER_REGISTRY name).
    _C.SSL.MAPPER = "InsLocCompositionMapper"
    # Write console / metrics.json / TensorBoard every this many iterations.
    _C.SSL.LOG_PERIOD = 20
    # SOLVER.BASE_LR is the learning rate for this total batch; it is scaled linearly with
    # SOLVER.IMS_PER_BATCH (0.03 at 256 for MoCo-v2 / InsLoc).
    _C.SSL.REFERENCE_BATCH_SIZE = 256
    # Scale SOLVER.BASE_LR_END with the batch as SOLVER.BASE_LR (an end lr relative to the peak,
    # LOCA's 1 %); False keeps it absolute (SlotCon's eta_min 1e-6).
    _C.SSL.SCALE_LR_END = True
    # Count an epoch as floor(images / batch) iterations, as a loader that drops its last
    # incomplete batch (SlotCon's DataLoader, LOCA's steps_per_epoch); False: ceil (MoCo's and
    # InsLoc's samplers, which pad the last batch).
    _C.SSL.DROP_LAST = False
    # Number of negatives kept in each queue (K).
    _C.SSL.QUEUE_SIZE = 65536
    # Softmax temperature of the InfoNCE loss (T).
    _C.SSL.TEMPERATURE = 0.2
    # Momentum of the key encoder update (m); the key encoder starts as a copy of the query one.
    _C.SSL.MOMENTUM = 0.999
    # Raise the momentum to 1 by a cosine over training (BYOL-style EMA) instead of keeping it fixed.
    _C.SSL.MOMENTUM_COSINE = False
    # Hidden width of the 2-layer MLP projection head.
    _C.SSL.PROJ_HIDDEN_DIM = 2048
    # Output width of the projection head (the contrastive embedding).
    _C.SSL.PROJ_DIM = 128
    # Shuffle the key batch across ranks before the key encoder (MoCo's shuffle-BN).
    _C.SSL.SHUFFLE_BN = True
    # Sub-batches per process that run the encoders separately, so that each normalises with its
    # own BN statistics as that many GPUs would (queries split in order, keys after the shuffle).
    # 1 with one process lets queries and keys share the batch's statistics: the leak that
    # shuffle-BN exists to stop (He et al. 2020, Sec. 3.3), and the CPU configs' collapse.
    _C.SSL.BN_GROUPS = 1
    # Which copy the fine-tuning checkpoint exports: "online" (query encoder) or "momentum".
    _C.SSL.EXPORT = "online"
    # The fine-tuning meta-architecture whose state-dict keys the export keeps
    # ("GeneralizedRCNN" for Faster / Mask R-CNN, "RetinaNet").
    _C.SSL.EXPORT_META_ARCHITECTURE = "GeneralizedRCNN"


def add_pixel_aug_config(cfg):
    """MoCo-v2 pixel augmentation, applied to every pretraining view."""
    _C = cfg
    _C.INPUT.SSL_AUG = CN()
    # Colour jitter strengths: brightness, contrast, saturation, hue.
    _C.INPUT.SSL_AUG.COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)
    # Probability of applying the colour jitter.
    _C.INPUT.SSL_AUG.COLOR_JITTER_PROB = 0.8
    # Probability of converting a view to grayscale.
    _C.INPUT.SSL_AUG.GRAYSCALE_PROB = 0.2
    # Range of the Gaussian blur sigma, in pixels.
    _C.INPUT.SSL_AUG.BLUR_SIGMA = (0.1, 2.0)
    # Gaussian blur kernel side as a fraction of the shorter image side, made odd (SimCLR /
    # MoCo-v2: 23 px at 224).
    _C.INPUT.SSL_AUG.BLUR_KERNEL_FRACTION = 0.1
    # Probability of the Gaussian blur.
    _C.INPUT.SSL_AUG.BLUR_PROB = 0.5
    # Probability of a horizontal flip (boxes are flipped with the image).
    _C.INPUT.SSL_AUG.FLIP_PROB = 0.5
    # Decode a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling) when every crop a
    # pretext mapper takes from it still keeps at least its output size; the sampled geometry is
    # the same either way. False decodes every image at full size, as the releases do.
    _C.INPUT.SSL_AUG.DRAFT_DECODE = True
