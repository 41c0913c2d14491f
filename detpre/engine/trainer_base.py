"""What detpre's trainers share on top of Detectron2's DefaultTrainer."""

import logging
import weakref

import torch
from detectron2.engine import (
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    hooks,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import BoundedPeriodicCheckpointer, DetpreCheckpointer
from .amp import MixedPrecisionTrainer, autocast_dtype, device_type
from .preemption import PreemptionHook


def unwrap_model(model):
    """The module inside DistributedDataParallel, or the model itself."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model


class DetpreTrainer(DefaultTrainer):
    """
    ``DefaultTrainer`` whose model wrapping and checkpointer are overridable methods.

    Detectron2 builds both inline in ``DefaultTrainer.__init__``: its DistributedDataParallel
    always passes ``device_ids=[local_rank]``, which fails for CPU processes (``--num-gpus 2`` on
    the gloo backend), and never sets ``find_unused_parameters``, which models that leave
    parameters without gradient need. This ``__init__`` is DefaultTrainer's, in the same order,
    with those two steps going through :meth:`wrap_model` and :meth:`build_checkpointer`, and the
    step loop through :meth:`build_step_trainer`.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self.wrap_model(model)
        self._trainer = self.build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(cfg, model, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_step_trainer(cls, cfg, model, data_loader, optimizer):
        """
        The loop that runs one optimisation step: :class:`MixedPrecisionTrainer` (Detectron2's
        ``AMPTrainer`` on the model's device, at ``SOLVER.AMP.PRECISION``) when
        ``SOLVER.AMP.ENABLED``, else ``SimpleTrainer``. Subclasses with another step override it.

        Args:
            cfg (CfgNode): the run's config.
            model (nn.Module): the wrapped model.
            data_loader (iterable): the training loader.
            optimizer (torch.optim.Optimizer): the optimizer.
        """
        if not cfg.SOLVER.AMP.ENABLED:
            return SimpleTrainer(model, data_loader, optimizer)
        return MixedPrecisionTrainer(
            model,
            data_loader,
            optimizer,
            precision=autocast_dtype(cfg.SOLVER.AMP.PRECISION),
            device=device_type(cfg.MODEL.DEVICE),
        )

    @classmethod
    def build_model(cls, cfg):
        """
        Detectron2's model, its weights in channels-last memory format when
        ``MODEL.CHANNELS_LAST``.

        Args:
            cfg (CfgNode): the run's config.
        """
        model = super().build_model(cfg)
        if cfg.MODEL.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def wrap_model(cls, model):
        """
        DistributedDataParallel when there is more than one process, for GPU or CPU processes.

        Args:
            model (nn.Module): the built model; a ``has_unused_parameters`` attribute that is
                True turns on DDP's search for parameters without gradient.
        """
        kwargs = {"broadcast_buffers": False}
        if next(model.parameters()).device.type == "cpu":
            kwargs["device_ids"] = None
        if getattr(model, "has_unused_parameters", False):
            kwargs["find_unused_parameters"] = True
        return create_ddp_model(model, **kwargs)

    def build_hooks(self):
        """DefaultTrainer's hooks, with the periodic checkpointer bounded by
        ``SOLVER.CHECKPOINT_MAX_TO_KEEP``, and the preemption hook (``SOLVER.PREEMPTION``)."""
        ret = super().build_hooks()
        ret = [
            (
                BoundedPeriodicCheckpointer.from_trainer(self)
                if isinstance(h, hooks.PeriodicCheckpointer)
                else h
            )
            for h in ret
        ]
        # Last: a preemption checkpoint holds the state after every other hook's step.
        return ret + [PreemptionHook.from_config(self.cfg)]

    @classmethod
    def build_checkpointer(cls, cfg, model, trainer=None):
        """
        Args:
            cfg (CfgNode): the run's config (checkpoints go to OUTPUT_DIR).
            model (nn.Module): the model, DDP-wrapped or not.
            trainer: the trainer whose state (iteration, optimizer, scheduler) is saved with it.
        """
        extra = {} if trainer is None else {"trainer": trainer}
        return DetpreCheckpointer(model, cfg.OUTPUT_DIR, **extra)
