"""Noisy-student self-training (Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS
2020): pseudo-labelling with a teacher, a student on mixed batches with loss normalization."""

from .loss_normalization import LossNormalizer
from .mixed_loader import MixedBatch, MixedDataLoader, build_mixed_train_loader, student_batch_sizes
from .pseudo_label import (
    PseudoLabelMapper,
    autocast_dtype,
    build_teacher,
    coco_categories,
    labeller_workers,
    pseudo_label_dataset,
    run_pseudo_labelling,
)
from .student_trainer import StudentStep, StudentTrainer, build_student_mappers

__all__ = [
    "LossNormalizer",
    "MixedBatch",
    "MixedDataLoader",
    "PseudoLabelMapper",
    "StudentStep",
    "StudentTrainer",
    "autocast_dtype",
    "build_mixed_train_loader",
    "build_student_mappers",
    "build_teacher",
    "coco_categories",
    "labeller_workers",
    "pseudo_label_dataset",
    "run_pseudo_labelling",
    "student_batch_sizes",
]
