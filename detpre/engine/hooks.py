"""Training hooks shared by the pretraining methods."""

from detectron2.engine import HookBase

from ..modeling.ssl.momentum import cosine_momentum
from .trainer_base import unwrap_model


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
        model = unwrap_model(self.trainer.model)
        m = self._base
        if self._cosine:
            m = cosine_momentum(self._base, self.trainer.iter, self.trainer.max_iter)
        model.momentum_update(m)
        self.trainer.storage.put_scalar("momentum", m, smoothing_hint=False)
