"""The fine-tuning trainer of ``tools/train_net.py``."""

import logging
import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader

from ..data.mappers.finetune import RobustDatasetMapper
from ..data.mappers.sem_seg import SemSegDatasetMapper
from ..data.transforms.strong_aug import build_strong_augmentation
from ..evaluation import build_evaluator
from ..solver import build_poly_lr_scheduler, build_pretrain_optimizer
from .trainer_base import DetpreTrainer

logger = logging.getLogger(__name__)

# Meta-architectures that take label maps (configs/semseg): their data go through
# SemSegDatasetMapper.
SEM_SEG_META_ARCHITECTURES = ("SemanticSegmentor",)


def is_sem_seg(cfg):
    """Whether a fine-tuning config trains a semantic-segmentation model."""
    return cfg.MODEL.META_ARCHITECTURE in SEM_SEG_META_ARCHITECTURES


class FinetuneTrainer(DetpreTrainer):
    """
    Detectron2's ``DefaultTrainer`` with what the transfer protocol of self-supervised detection
    papers needs and nothing on the hot path:

    - the evaluator follows the dataset (COCO json -> COCOEvaluator, VOC layout -> PascalVOC);
    - ``MODEL.WEIGHTS`` loads through :class:`DetpreCheckpointer` (Detectron2 checkpoints, detpre
      pretraining outputs, torchvision-style ResNets) and logs one load table per module group;
      checkpoints are written atomically;
    - an unreadable training image is skipped and counted (``FINETUNE.SKIP_CORRUPT_IMAGES``);
    - ``FINETUNE.STRONG_AUG`` trains with a strong augmentation preset (S1-S4);
    - a ``SemanticSegmentor`` config (``configs/semseg``) reads label maps through
      :class:`SemSegDatasetMapper` (mmseg's augmentation, bad labels skipped and counted) and is
      evaluated by mIoU; ``SOLVER.LR_SCHEDULER_NAME`` "WarmupPolyLR" is mmseg's poly schedule.
    """

    def train(self):
        """
        Run training, then return the results of the final evaluation (Detectron2's returns them
        only when TEST.EXPECTED_RESULTS is set).

        Returns:
            OrderedDict or None: the last evaluation results.
        """
        super().train()
        return getattr(self, "_last_eval_results", None)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's SGD unless ``SOLVER.OPTIMIZER`` names AdamW (ViTDet) or LARS."""
        return build_pretrain_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """Detectron2's schedulers, and the poly schedule with a floor (``WarmupPolyLR``)."""
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
            return build_poly_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        # With FINETUNE.SKIP_CORRUPT_IMAGES False it raises CorruptImageError naming the file.
        return build_detection_train_loader(cfg, mapper=cls.build_train_mapper(cfg))

    @classmethod
    def build_train_mapper(cls, cfg):
        """
        Detectron2's ``DatasetMapper`` (as :class:`RobustDatasetMapper`), with the augmentations
        of ``INPUT.STRONG_AUG.PRESET`` when ``FINETUNE.STRONG_AUG``; :class:`SemSegDatasetMapper`
        for a semantic-segmentation config.
        """
        if is_sem_seg(cfg):
            return SemSegDatasetMapper(cfg, is_train=True)
        if not cfg.FINETUNE.STRONG_AUG:
            return RobustDatasetMapper(cfg, is_train=True)
        augmentations = build_strong_augmentation(cfg, is_train=True)
        logger.info(f"Training augmentation ({cfg.INPUT.STRONG_AUG.PRESET}): {augmentations}")
        return RobustDatasetMapper(cfg, is_train=True, augmentations=augmentations)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper_class = SemSegDatasetMapper if is_sem_seg(cfg) else RobustDatasetMapper
        return build_detection_test_loader(
            cfg, dataset_name, mapper=mapper_class(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)
