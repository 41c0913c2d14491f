"""
detpre's additions to Detectron2's config.

``add_detpre_config(cfg)`` adds one ``CN()`` node per concern; every key has a comment above it.
Method nodes (InsLoc, MoCo-v2, AlignDet, ...) are added by their own ``add_*_config`` functions,
all called from here, so one call prepares a config for any detpre tool.
"""

from detectron2.config import CfgNode as CN

from .aligndet_defaults import add_aligndet_config
from .insloc_defaults import add_insloc_config
from .loca_defaults import add_loca_config
from .moco_defaults import add_moco_config
from .selftrain_defaults import add_selftrain_config
from .semseg_defaults import add_semseg_config
from .slotcon_defaults import add_slotcon_config
from .ssl_defaults import add_pixel_aug_config, add_ssl_config
from .strong_aug_defaults import add_strong_aug_config


def add_dataset_config(cfg):
    """
    Datasets a user registers from a config file or the command line, without writing Python.
    Each entry is a list of strings; see ``detpre.data.datasets.register_from_config``.
    """
    _C = cfg
    # COCO-format json datasets: ((name, json_file, image_root), ...). Relative paths are taken
    # under $DETECTRON2_DATASETS.
    _C.DATASETS.REGISTER_COCO = []
    # Pascal VOC layout folders: ((name, dirname, split), ...) or ((name, dirname, split,
    # "cls1,cls2,..."), ...); without class names they are read from the annotations.
    _C.DATASETS.REGISTER_VOC = []
    # Plain image folders, unlabeled: ((name, folder), ...); images are found recursively.
    _C.DATASETS.REGISTER_IMAGE_FOLDER = []
    # Semantic-segmentation folders: ((name, image_root, label_root, "cls0,cls1,..."), ...):
    # <stem>.jpg images and <stem>.png label maps (value i = class i, 255 ignored), paired by stem.
    _C.DATASETS.REGISTER_SEM_SEG = []


def add_finetune_config(cfg):
    """Keys of the fine-tuning protocol and of ``tools/train_net.py``."""
    _C = cfg
    _C.FINETUNE = CN()
    # Evaluator: "auto" picks COCOEvaluator for COCO-format data and PascalVOCDetectionEvaluator
    # for VOC-format data (by the dataset's ``evaluator_type`` metadata); "coco" or "voc" force one.
    _C.FINETUNE.EVALUATOR = "auto"
    # Skip an image that cannot be read during training (it is logged with its path and counted)
    # instead of stopping the run. Evaluation never skips: a missing test image is an error.
    _C.FINETUNE.SKIP_CORRUPT_IMAGES = True
    # Train with the strong augmentation preset INPUT.STRONG_AUG.PRESET (S1-S4, boxes and masks
    # moved with the image) instead of Detectron2's resize and flip: the supervised baselines and
    # the self-training teacher of Zoph et al. at a given augmentation strength. The student of
    # tools/self_train.py always uses the preset.
    _C.FINETUNE.STRONG_AUG = False


def add_checkpoint_config(cfg):
    """Keys of the periodic checkpoints that every detpre trainer writes."""
    _C = cfg
    # How many periodic checkpoints (model_XXXXXXX.pth, with their *_d2.pth exports) to keep;
    # older ones are deleted as new ones are written. 0 keeps all, as Detectron2 does.
    # model_final.pth is never deleted, and the newest checkpoint is always kept for --resume.
    _C.SOLVER.CHECKPOINT_MAX_TO_KEEP = 0
    # Preemption: on one of these signals (Slurm sends SIGTERM, or SIGUSR1 with --signal, before
    # it kills or requeues a job; submitit asks for SIGUSR2) every rank finishes its iteration, a
    # full checkpoint is written and the processes exit with EXIT_CODE (under tools/submit.py,
    # submitit requeues the job); --resume continues from the next iteration.
    _C.SOLVER.PREEMPTION = CN()
    # Signal names that stop a run with a checkpoint; empty: the default actions (death).
    _C.SOLVER.PREEMPTION.SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
    # Exit status of a preempted process: 75, sysexits' EX_TEMPFAIL (retry later).
    _C.SOLVER.PREEMPTION.EXIT_CODE = 75


def add_optimizer_config(cfg):
    """Keys of the optimizer, for pretraining and fine-tuning alike (``detpre/solver``)."""
    _C = cfg
    # Optimizer: "SGD" (Detectron2's, SOLVER.MOMENTUM / NESTEROV), "LARS" (SlotCon) or "AdamW"
    # (LOCA, ViTDet); LARS and AdamW exempt 1-D parameters (biases, norms) from weight decay.
    _C.SOLVER.OPTIMIZER = "SGD"
    # Trust coefficient of LARS.
    _C.SOLVER.LARS_ETA = 0.001
    # (beta1, beta2) of AdamW.
    _C.SOLVER.ADAMW_BETAS = (0.9, 0.999)


# Keys renamed since a release: a config that still sets one fails at start-up naming the new one.
RENAMED_KEYS = {
    "SSL.OPTIMIZER": "SOLVER.OPTIMIZER",
    "SSL.LARS_ETA": "SOLVER.LARS_ETA",
    "SSL.ADAMW_BETAS": "SOLVER.ADAMW_BETAS",
    "SLOTCON.BLUR_PROBS": "SLOTCON.BLUR_PROB",
    "SLOTCON.SOLARIZE_PROBS": "SLOTCON.SOLARIZE_PROB",
}


def add_precision_config(cfg):
    """Keys of mixed precision and memory format, for every detpre trainer."""
    _C = cfg
    # The half precision of SOLVER.AMP.ENABLED: "float16" (with a gradient scaler, Detectron2's
    # default) or "bfloat16" (no scaler needed). The pretext losses' logits, softmaxes, Sinkhorn,
    # centres, queues and EMA updates run in float32 under either.
    _C.SOLVER.AMP.PRECISION = "float16"
    # Convert the model's weights to channels-last memory format (NHWC), faster convolutions on
    # tensor-core GPUs; the same losses to float tolerance.
    _C.MODEL.CHANNELS_LAST = False


def add_detpre_config(cfg):
    """
    Add every detpre key to a Detectron2 config, in place.

    Args:
        cfg (CfgNode): a config from ``detectron2.config.get_cfg()``.
    """
    add_dataset_config(cfg)
    add_finetune_config(cfg)
    add_checkpoint_config(cfg)
    add_precision_config(cfg)
    add_optimizer_config(cfg)
    add_ssl_config(cfg)
    add_pixel_aug_config(cfg)
    add_insloc_config(cfg)
    add_moco_config(cfg)
    add_aligndet_config(cfg)
    add_slotcon_config(cfg)
    add_loca_config(cfg)
    add_strong_aug_config(cfg)
    add_selftrain_config(cfg)
    add_semseg_config(cfg)
    for old, new in RENAMED_KEYS.items():
        cfg.register_renamed_key(old, new)
