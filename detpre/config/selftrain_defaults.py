"""Config node of Noisy-student self-training."""

from detectron2.config import CfgNode as CN


def add_selftrain_config(cfg):
    """Noisy-student self-training: Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS 2020."""
    _C = cfg
    _C.SELF_TRAIN = CN()
    # Registered datasets whose images the teacher pseudo-labels: image folders or any registered
    # dataset (its own annotations are ignored). The paper labels ImageNet (1.2M images) for COCO.
    _C.SELF_TRAIN.UNLABELED_DATASETS = ()
    # Registered COCO-json datasets of pseudo-labels (``tools/pseudo_label.py`` output) that the
    # student trains on beside DATASETS.TRAIN. ``tools/self_train.py`` registers and sets them;
    # set them by hand (with DATASETS.REGISTER_COCO) to train a student on existing pseudo-labels.
    _C.SELF_TRAIN.PSEUDO_DATASETS = ()
    # Pseudo-labeled images per student step, over all processes, added to the SOLVER.IMS_PER_BATCH
    # human-labeled ones (the supervised run's batch, lr and schedule unchanged); <= 0 = as many as
    # SOLVER.IMS_PER_BATCH. Paper: 256 COCO + 256 pseudo-labeled images per batch.
    _C.SELF_TRAIN.PSEUDO_IMS_PER_BATCH = 0
    # Initial weights of each student: "teacher" = the teacher's final weights (the paper, Sec.
    # 3.2: "the parameters of the student model are initialized by the teacher model"; Appendix C:
    # 0.3-0.4 AP better than a fresh start, which needs ~2.25x the steps); "weights" =
    # MODEL.WEIGHTS, the same start as the first teacher.
    _C.SELF_TRAIN.STUDENT_INIT = "teacher"
    # Augmentation of the teacher, the supervised baseline of the results table: "student" trains
    # it with the student's preset and image size (INPUT.STRONG_AUG.*) and the same schedule
    # (SOLVER.*), so that teacher and student differ only by the pseudo-labels, as the paper
    # compares them; "config" keeps FINETUNE.STRONG_AUG as the config sets it (Detectron2's
    # resize and flip by default).
    _C.SELF_TRAIN.TEACHER_AUG = "student"

    _C.SELF_TRAIN.PSEUDO_LABEL = CN()
    # A prediction becomes a hard pseudo box when its score is at least this. Paper: 0.5.
    _C.SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH = 0.5
    # Images per forward pass of the teacher, per process (not in the paper: a throughput knob).
    _C.SELF_TRAIN.PSEUDO_LABEL.BATCH_SIZE = 4
    # Data-loader workers per process for pseudo-labelling; -1 = DATALOADER.NUM_WORKERS. Test-time
    # decoding is light: on a machine with few cores, workers take cores from the teacher.
    _C.SELF_TRAIN.PSEUDO_LABEL.NUM_WORKERS = -1
    # Numeric precision of the teacher's forward pass: "float32", or "bfloat16" / "float16" under
    # torch.autocast (about 1.8x faster on CPUs with AVX-512 BF16 or AMX, and on GPUs with tensor
    # cores; scores and boxes move by rounding, so boxes scoring near SCORE_THRESH can flip).
    # Not in Detectron2. Paper: the teacher ran on TPUs, whose matrix units compute in bfloat16.
    _C.SELF_TRAIN.PSEUDO_LABEL.PRECISION = "float32"
    # Teacher weights (and so activations) in channels-last memory layout: faster convolutions in
    # oneDNN and, with float16 / bfloat16, in cuDNN; equal results up to float rounding.
    _C.SELF_TRAIN.PSEUDO_LABEL.CHANNELS_LAST = False
    # Images between two flushes of the partial results to disk: a killed run loses at most this
    # many images per process (not in the paper).
    _C.SELF_TRAIN.PSEUDO_LABEL.CHUNK_SIZE = 64
    # Label only the first N images of each unlabeled dataset (in its order); 0 = all of them.
    # Paper: all (0); CPU configs use a few.
    _C.SELF_TRAIN.PSEUDO_LABEL.MAX_IMAGES = 0

    _C.SELF_TRAIN.LOSS_NORM = CN()
    # L = (L_h + a * (avg(L_h) / avg(L_p)) * L_p) / (1 + a), with L_h / L_p the human / pseudo
    # losses and avg their moving averages (all-reduced across processes). Off:
    # L = L_h + a * L_p, the paper's unnormalised baseline. Paper (Appendix B): on.
    _C.SELF_TRAIN.LOSS_NORM.ENABLED = True
    # a: weight of the pseudo-label loss relative to the human-label loss. Paper: alpha, tuned per
    # setting (COCO + ImageNet, Appendix H: 1.0 with Augment-S1 / S2, 0.5 with S3 / S4); 1.0
    # weighs both equally once normalised (the per-preset configs set the paper's value).
    _C.SELF_TRAIN.LOSS_NORM.ALPHA = 1.0
    # Decay of the moving averages: avg <- m * avg + (1 - m) * loss, starting at the first loss
    # (detpre's start). Paper (Appendix B): exponential moving averages with decay 0.9997.
    _C.SELF_TRAIN.LOSS_NORM.MOMENTUM = 0.9997
