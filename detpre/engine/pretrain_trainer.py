"""The trainer of ``tools/pretrain_net.py``: label-free pretraining on any registered image set."""

import logging
import math
import os

from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.engine import hooks
from detectron2.utils import comm

from ..checkpoint import BoundedPeriodicCheckpointer
from ..checkpoint.export import ExportingCheckpointer, FinetuneExporter
from ..data.build import build_pretrain_mapper, get_pretrain_dicts
from ..data.samplers import ResumableTrainingSampler, SamplerPositionHook
from ..methods import check_method_config
from ..modeling.meta_arch.base import PretrainingMetaArch
from ..solver import build_pretrain_optimizer
from .hooks import MomentumScheduleHook
from .preemption import PreemptionHook
from .trainer_base import DetpreTrainer, unwrap_model

logger = logging.getLogger(__name__)


def derive_schedule(cfg, num_images):
    """
    Turn the epoch schedule and the reference learning rate into Detectron2's iteration keys.

    ``SOLVER.MAX_ITER = ceil(SSL.EPOCHS * iterations per epoch)`` when ``SSL.EPOCHS`` is
    positive, an epoch being ``ceil(num_images / SOLVER.IMS_PER_BATCH)`` iterations
    (``floor`` with ``SSL.DROP_LAST``), and ``SOLVER.BASE_LR`` (and ``BASE_LR_END`` unless
    ``SSL.SCALE_LR_END`` is False) scaled by ``IMS_PER_BATCH / SSL.REFERENCE_BATCH_SIZE``.
    Warm-up and LR steps may be given in epochs (``SSL.WARMUP_EPOCHS``, ``SSL.STEP_EPOCHS``);
    they then replace Detectron2's iteration keys ``SOLVER.WARMUP_ITERS`` and ``SOLVER.STEPS``.
    With ``SOLVER.RESCALE_INTERVAL`` (the schedule after the warm-up spans the iterations left)
    a warm-up as long as the run is cut to leave one iteration.

    Args:
        cfg (CfgNode): the pretraining config (not modified).
        num_images (int): images in the training set(s).

    Returns:
        CfgNode: a frozen copy with the derived values.
    """
    cfg = cfg.clone()
    cfg.defrost()
    batch = cfg.SOLVER.IMS_PER_BATCH
    rounding = math.floor if cfg.SSL.DROP_LAST else math.ceil
    iters_per_epoch = max(1, rounding(num_images / batch))
    if cfg.SSL.EPOCHS > 0:
        cfg.SOLVER.MAX_ITER = int(math.ceil(cfg.SSL.EPOCHS * iters_per_epoch))
    cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * batch / cfg.SSL.REFERENCE_BATCH_SIZE
    if cfg.SSL.SCALE_LR_END:
        cfg.SOLVER.BASE_LR_END = cfg.SOLVER.BASE_LR_END * batch / cfg.SSL.REFERENCE_BATCH_SIZE
    if cfg.SSL.WARMUP_EPOCHS > 0:
        cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SSL.WARMUP_EPOCHS * iters_per_epoch))
    if cfg.SSL.STEP_EPOCHS:
        cfg.SOLVER.STEPS = tuple(int(round(e * iters_per_epoch)) for e in cfg.SSL.STEP_EPOCHS)
    if cfg.SOLVER.RESCALE_INTERVAL and cfg.SOLVER.WARMUP_ITERS >= cfg.SOLVER.MAX_ITER:
        # The schedule after the warm-up is rescaled to the iterations left: keep at least one
        # (a short run, e.g. a test, whose warm-up in epochs would cover it all).
        warmup = max(0, cfg.SOLVER.MAX_ITER - 1)
        logger.warning(
            "SOLVER.WARMUP_ITERS %d covers the whole run of %d iterations; using %d",
            cfg.SOLVER.WARMUP_ITERS,
            cfg.SOLVER.MAX_ITER,
            warmup,
        )
        cfg.SOLVER.WARMUP_ITERS = warmup
    cfg.freeze()
    return cfg


def memory_larger_than_data(cfg, num_images):
    """
    The memory keys of a pretext (negative queue, prototypes) whose value exceeds the number of
    training images: a queue longer than an epoch holds each query's own image as a negative from
    the second epoch on, and more prototypes than images cannot all be used.

    Args:
        cfg (CfgNode): a pretraining config.
        num_images (int): images in DATASETS.TRAIN.

    Returns:
        list[tuple[str, int]]: (key, value) of every such key of the config's method.
    """
    arch = cfg.MODEL.META_ARCHITECTURE
    keys = []
    if arch in ("InsLoc", "MoCoV2"):
        keys.append(("SSL.QUEUE_SIZE", cfg.SSL.QUEUE_SIZE))
    if arch == "SlotCon":
        keys.append(("SLOTCON.NUM_PROTOTYPES", cfg.SLOTCON.NUM_PROTOTYPES))
    if arch == "LOCA" and cfg.LOCA.CLUSTER_LOSS_WEIGHT > 0:
        keys.append(("LOCA.NUM_PROTOTYPES", cfg.LOCA.NUM_PROTOTYPES))
    return [(k, v) for k, v in keys if v > num_images]


class PretrainTrainer(DetpreTrainer):
    """
    Detectron2's ``DefaultTrainer`` for the pretext tasks: the loader runs the method's pretext
    mapper over an image dataset (labels ignored), the schedule is in epochs, there is no
    evaluation, the momentum copy follows its schedule, and every checkpoint, written atomically,
    carries the whole state (online and momentum networks, queues and pointers, optimizer,
    scheduler, iteration) with a fine-tuning checkpoint exported beside it.
    """

    def __init__(self, cfg):
        check_method_config(cfg)
        num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
        cfg = derive_schedule(cfg, num_images)
        logger.info(
            "Pretraining on %d images: %d iterations (%g epochs at %d images), base lr %.4g",
            num_images,
            cfg.SOLVER.MAX_ITER,
            cfg.SSL.EPOCHS,
            cfg.SOLVER.IMS_PER_BATCH,
            cfg.SOLVER.BASE_LR,
        )
        for key, value in memory_larger_than_data(cfg, num_images):
            logger.warning(
                "%s %d is larger than the %d images of DATASETS.TRAIN %s: the pretext contradicts "
                "itself (a queue then holds each query's own image as a negative; prototypes "
                "outnumber the images). Size it to the data (at most a quarter of an epoch).",
                key,
                value,
                num_images,
                tuple(cfg.DATASETS.TRAIN),
            )
        super().__init__(cfg)

    def resume_or_load(self, resume=True):
        """
        Resume from OUTPUT_DIR's last checkpoint (online and momentum networks, queues, optimizer,
        scheduler, iteration), or start from ``MODEL.WEIGHTS``. In the latter case the momentum
        copy is reset to the loaded online network, as the key encoder starts as a copy of the
        query encoder. A model with ``check_initialisation(weights)`` checks the weights of a run
        that does not resume first (AlignDet refuses to freeze a random backbone).
        """
        resuming = resume and self.checkpointer.has_checkpoint()
        check = getattr(unwrap_model(self.model), "check_initialisation", None)
        if not resuming and check is not None:
            check(self.cfg.MODEL.WEIGHTS)
        super().resume_or_load(resume=resume)
        if not resuming and self.cfg.MODEL.WEIGHTS:
            unwrap_model(self.model).reset_momentum()

    @classmethod
    def build_model(cls, cfg):
        """
        The pretraining meta-architecture, which must implement the trainer's contract
        (:class:`PretrainingMetaArch`: momentum copy and its update, unused-parameter report).
        """
        model = super().build_model(cfg)
        if not isinstance(model, PretrainingMetaArch):
            raise ValueError(
                f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} is not a pretraining "
                "meta-architecture (a detpre PretrainingMetaArch subclass: InsLoc, MoCoV2, "
                "SlotCon, LOCA, AlignDet, AlignDetRetinaNet); fine-tune detectors with "
                "tools/train_net.py"
            )
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        """
        The pretext mapper over the training images, sampled by a
        :class:`ResumableTrainingSampler` (seeded with ``SEED`` when it is >= 0), which the loader
        carries as ``resumable_sampler`` so that checkpoints hold its position.
        """
        dicts = get_pretrain_dicts(cfg)
        sampler = ResumableTrainingSampler(len(dicts), seed=cfg.SEED if cfg.SEED >= 0 else None)
        loader = build_detection_train_loader(
            dataset=dicts,
            mapper=build_pretrain_mapper(cfg, dicts),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
        loader.resumable_sampler = sampler
        return loader

    @classmethod
    def build_optimizer(cls, cfg, model):
        """The optimizer named by ``SOLVER.OPTIMIZER`` (see ``detpre.solver``)."""
        return build_pretrain_optimizer(cfg, model)

    @classmethod
    def build_checkpointer(cls, cfg, model, trainer=None):
        """A checkpointer that exports a fine-tuning checkpoint beside every full checkpoint."""
        exporter = FinetuneExporter(cfg) if comm.is_main_process() else None
        extra = {} if trainer is None else {"trainer": trainer}
        return ExportingCheckpointer(model, cfg.OUTPUT_DIR, exporter=exporter, **extra)

    def build_hooks(self):
        ret = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            MomentumScheduleHook(),
        ]
        sampler = getattr(self._trainer.data_loader, "resumable_sampler", None)
        if sampler is not None:
            ret.append(SamplerPositionHook(sampler, self.cfg.SOLVER.IMS_PER_BATCH))
        if comm.is_main_process():
            ret.append(BoundedPeriodicCheckpointer.from_trainer(self))
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=self.cfg.SSL.LOG_PERIOD))
        # Last: a preemption checkpoint holds the state after every other hook's step.
        ret.append(PreemptionHook.from_config(self.cfg))
        return ret

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        raise NotImplementedError(
            "Pretraining has no evaluation; fine-tune the exported checkpoint with tools/train_net.py"
        )

    @property
    def finetune_checkpoint(self):
        """Path of the last exported fine-tuning checkpoint."""
        return os.path.join(self.cfg.OUTPUT_DIR, "model_final_d2.pth")
