"""The student of self-training: Zoph et al., "Rethinking Pre-training and Self-training",
NeurIPS 2020."""

import contextlib
import logging
import time

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch.nn.parallel import DistributedDataParallel

from ..data.mappers.finetune import RobustDatasetMapper
from ..engine.amp import autocast_dtype, device_type, half_precision_scaler
from ..engine.finetune_trainer import FinetuneTrainer
from .loss_normalization import LossNormalizer
from .mixed_loader import build_mixed_train_loader

__all__ = ["StudentStep", "StudentTrainer", "build_student_mappers"]

logger = logging.getLogger(__name__)


class StudentStep(SimpleTrainer):
    """
    One student step on a :class:`~detpre.selftrain.mixed_loader.MixedBatch`: the model runs on
    the human-labeled part and on the pseudo-labeled part, and the two summed losses are combined
    by a :class:`LossNormalizer` (Zoph et al. 2020). The human part is backpropagated first (its
    weight 1 / (1 + a) is a constant; under DDP without gradient synchronisation), then the
    pseudo part with the weight the moving averages give: the same gradients as one backward of
    the combined loss, with one part's activations in memory at a time.

    Logged: the weighted terms (``human/loss_*``, ``pseudo/loss_*``, summing to ``total_loss``,
    the loss optimised), and ``loss_human``, ``loss_pseudo`` (averaged over processes) and
    ``loss_ratio`` = avg(L_h) / avg(L_p).
    """

    def __init__(self, model, data_loader, optimizer, normalizer, *, precision=None, device="cuda"):
        """
        Args:
            model, data_loader, optimizer: as in :class:`SimpleTrainer`; the loader yields
                ``MixedBatch``.
            normalizer (LossNormalizer): combines the two losses; saved with the trainer state.
            precision (torch.dtype or None): mixed precision under ``torch.autocast(device)``
                (``SOLVER.AMP.PRECISION``): float16 with a gradient scaler, bfloat16 without;
                None trains in float32.
            device (str): the autocast device type of the model ("cuda" or "cpu").
        """
        super().__init__(model, data_loader, optimizer)
        self.normalizer = normalizer
        self.precision = precision
        self.device = device
        self.amp = precision is not None
        self.grad_scaler = None
        if self.amp:
            self.grad_scaler = half_precision_scaler(precision, device)

    def _forward(self, data):
        with torch.autocast(self.device, dtype=self.precision, enabled=self.amp):
            loss_dict = self.model(data)
        return loss_dict, sum(loss_dict.values())

    def _backward(self, loss):
        (self.grad_scaler.scale(loss) if self.amp else loss).backward()

    def run_step(self):
        assert self.model.training, "[StudentStep] model was changed to eval mode!"
        start = time.perf_counter()
        batch = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        self.optimizer.zero_grad()
        is_ddp = isinstance(self.model, DistributedDataParallel)
        with self.model.no_sync() if is_ddp else contextlib.nullcontext():
            human_dict, loss_human = self._forward(batch.labeled)
            self._backward(self.normalizer.human_weight * loss_human)
        pseudo_dict, loss_pseudo = self._forward(batch.pseudo)
        human, pseudo = self.normalizer.update(loss_human, loss_pseudo)
        w_human, w_pseudo = self.normalizer.human_weight, self.normalizer.pseudo_weight
        self._backward(w_pseudo * loss_pseudo)
        self.after_backward()

        weighted = {f"human/{k}": w_human * v.detach() for k, v in human_dict.items()}
        weighted.update({f"pseudo/{k}": w_pseudo * v.detach() for k, v in pseudo_dict.items()})
        self._write_metrics(weighted, data_time)
        if comm.is_main_process():
            get_event_storage().put_scalars(
                loss_human=human, loss_pseudo=pseudo, loss_ratio=self.normalizer.ratio
            )
        if self.amp:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        ret = super().state_dict()
        ret["loss_normalizer"] = self.normalizer.state_dict()
        if self.amp:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "loss_normalizer" in state_dict:
            self.normalizer.load_state_dict(state_dict["loss_normalizer"])
        if self.amp and state_dict.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def build_student_mappers(cfg):
    """
    The mappers of the two halves: Detectron2's ``DatasetMapper`` (as
    :class:`RobustDatasetMapper`, skipping unreadable images) with the strong augmentation
    preset ``INPUT.STRONG_AUG.PRESET``, which moves boxes and masks with the image. Pseudo masks
    are RLE, so the pseudo-labeled half reads masks as bitmasks.

    Args:
        cfg (CfgNode): the student's config.

    Returns:
        tuple[callable, callable]: (labeled mapper, pseudo-labeled mapper).
    """
    from ..data.transforms.strong_aug import build_strong_augmentation

    augmentations = build_strong_augmentation(cfg, is_train=True)
    logger.info(f"Student augmentation ({cfg.INPUT.STRONG_AUG.PRESET}): {augmentations}")
    labeled = RobustDatasetMapper(cfg, is_train=True, augmentations=augmentations)
    pseudo = RobustDatasetMapper(
        cfg, is_train=True, augmentations=augmentations, instance_mask_format="bitmask"
    )
    return labeled, pseudo


class StudentTrainer(FinetuneTrainer):
    """
    The student of noisy-student self-training (Zoph et al., "Rethinking Pre-training and
    Self-training", NeurIPS 2020): :class:`FinetuneTrainer` (evaluation, checkpoints, load
    reports) whose every step takes ``SOLVER.IMS_PER_BATCH`` images from ``DATASETS.TRAIN`` (the
    supervised run's batch) plus ``SELF_TRAIN.PSEUDO_IMS_PER_BATCH`` from
    ``SELF_TRAIN.PSEUDO_DATASETS``, both strongly
    augmented, and optimises the normalized combination of the two losses
    (:class:`StudentStep`). The student starts from ``MODEL.WEIGHTS``.
    """

    @classmethod
    def build_step_trainer(cls, cfg, model, data_loader, optimizer):
        """The student's step: two losses, normalized (:class:`StudentStep`)."""
        return StudentStep(
            model,
            data_loader,
            optimizer,
            LossNormalizer(cfg),
            precision=autocast_dtype(cfg.SOLVER.AMP.PRECISION) if cfg.SOLVER.AMP.ENABLED else None,
            device=device_type(cfg.MODEL.DEVICE),
        )

    @classmethod
    def build_train_loader(cls, cfg):
        return build_mixed_train_loader(cfg, *build_student_mappers(cfg))
