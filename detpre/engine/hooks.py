"""Training hooks shared by the pretraining methods."""
import math

from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel


def momentum_at(base_momentum, iteration, max_iter, cosine):
    """
    Momentum of the EMA copy at an iteration.

    Args:
        base_momentum (float): m0 (0.999 for MoCo / InsLoc, 0.996 for BYOL-style EMA).
        iteration (int): the step just taken, 0-based.
        max_iter (int): total steps.
        cosine (bool): raise m from m0 to 1 by ``1 - (1 - m0) * (cos(pi * t / T) + 1) / 2``.

    Returns:
        float
    """
    if not cosine:
        return base_momentum
    t = min(max(iteration, 0), max_iter) / max(max_iter, 1)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * t) + 1.0) / 2.0


class MomentumScheduleHook(HookBase):
    """
    After every optimizer step, moves the model's momentum copy towards the online network with
    the scheduled momentum (``SSL.MOMENTUM``, fixed or cosine to 1 with ``SSL.MOMENTUM_COSINE``),
    through the model's ``momentum_update(m)``; logs the momentum used.
    """

    def before_train(self):
        cfg = self.trainer.cfg
        self._base = cfg.SSL.MOMENTUM
        self._cosine = cfg.SSL.MOMENTUM_COSINE

    def after_step(self):
        model = self.trainer.model
        if isinstance(model, DistributedDataParallel):
            model = model.module
        m = momentum_at(self._base, self.trainer.iter, self.trainer.max_iter, self._cosine)
        model.momentum_update(m)
        self.trainer.storage.put_scalar("momentum", m, smoothing_hint=False)
