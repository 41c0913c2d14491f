"""
Mixed precision for every detpre trainer: ``SOLVER.AMP.ENABLED`` with ``SOLVER.AMP.PRECISION``
("float16" or "bfloat16"), on the model's device (CUDA, or CPU where autocast supports it).
"""

import logging
import time

import torch
from detectron2.engine import AMPTrainer

__all__ = [
    "PRECISIONS",
    "MixedPrecisionTrainer",
    "autocast_dtype",
    "device_type",
    "half_precision_scaler",
]

logger = logging.getLogger(__name__)

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(precision, key="SOLVER.AMP.PRECISION", allow_float32=False):
    """
    Args:
        precision (str): "float16", "bfloat16" (or "float32" where ``allow_float32``).
        key (str): the config key it came from, named in the error.
        allow_float32 (bool): accept "float32" (no autocast).

    Returns:
        torch.dtype or None: the autocast dtype; None for float32.
    """
    allowed = sorted(p for p in PRECISIONS if allow_float32 or p != "float32")
    if precision not in allowed:
        raise ValueError(f"{key} must be one of {allowed}, got {precision!r}")
    return PRECISIONS[precision]


def device_type(device):
    """
    Args:
        device (str or torch.device): e.g. ``MODEL.DEVICE`` ("cuda", "cuda:1", "cpu").

    Returns:
        str: the device type autocast takes ("cuda", "cpu").
    """
    return torch.device(device).type


def half_precision_scaler(precision, device):
    """
    Args:
        precision (torch.dtype): torch.float16 or torch.bfloat16.
        device (str): the autocast device type.

    Returns:
        GradScaler: enabled for float16; disabled (a pass-through) for bfloat16, whose exponent
        range is float32's, so gradients do not underflow.
    """
    if precision not in (torch.float16, torch.bfloat16):
        raise ValueError(f"mixed precision is float16 or bfloat16, got {precision}")
    return torch.amp.GradScaler(device, enabled=precision == torch.float16)


class MixedPrecisionTrainer(AMPTrainer):
    """
    Detectron2's ``AMPTrainer`` on any autocast device and at either half precision: float16 with
    its gradient scaler, bfloat16 without one (it has float32's exponent range, so gradients do not
    underflow). Detectron2's ``run_step`` hard-codes CUDA's autocast; this one takes the device of
    the model. The scaler's state is saved with the trainer; a checkpoint of another precision (or
    of a run without AMP) resumes with a fresh scaler.
    """

    def __init__(self, model, data_loader, optimizer, *, precision, device="cuda", **kwargs):
        """
        Args:
            model, data_loader, optimizer: as in ``SimpleTrainer``.
            precision (torch.dtype): torch.float16 or torch.bfloat16.
            device (str): the autocast device type of the model ("cuda" or "cpu").
            kwargs: further arguments of ``AMPTrainer`` (``gather_metric_period``, ...).
        """
        scaler = half_precision_scaler(precision, device)
        super().__init__(
            model, data_loader, optimizer, grad_scaler=scaler, precision=precision, **kwargs
        )
        self.device = device

    def run_step(self):
        """``AMPTrainer.run_step`` with ``torch.autocast(self.device, self.precision)``."""
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def load_state_dict(self, state_dict):
        scaler = state_dict.get("grad_scaler")
        if self.grad_scaler.is_enabled() and not scaler:
            logger.info("The checkpoint has no float16 gradient scaler: starting a fresh one")
            state_dict = {k: v for k, v in state_dict.items() if k != "grad_scaler"}
            super(AMPTrainer, self).load_state_dict(state_dict)
            return
        super().load_state_dict(dict(state_dict, grad_scaler=scaler or {}))
