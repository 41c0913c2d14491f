"""The poly learning-rate schedule with a floor, as mmseg's and Segmenter's."""

import math

from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR
from detectron2.solver.lr_scheduler import _get_warmup_factor_at_iter

__all__ = ["WarmupPolyLRWithFloor", "build_poly_lr_scheduler"]


class WarmupPolyLRWithFloor(WarmupPolyLR):
    """
    Detectron2's DeepLab ``WarmupPolyLR`` ending at ``end_lr`` instead of 0: at iteration t of T,
    ``lr = (base_lr - end_lr) * (1 - t / T) ** power + end_lr`` (times the warm-up factor), the
    rule of mmseg's ``PolyLrUpdaterHook(min_lr=...)`` and Segmenter's ``PolynomialLR``.
    """

    def __init__(self, optimizer, max_iters, *, end_lr=0.0, **kwargs):
        """
        Args:
            optimizer (torch.optim.Optimizer): the optimizer.
            max_iters (int): T.
            end_lr (float): the floor, an absolute learning rate.
            kwargs: warmup_factor, warmup_iters, warmup_method, power of ``WarmupPolyLR``.
        """
        self.end_lr = end_lr
        super().__init__(optimizer, max_iters, **kwargs)

    def get_lr(self):
        warmup = _get_warmup_factor_at_iter(
            self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor
        )
        decay = math.pow(max(1.0 - self.last_epoch / self.max_iters, 0.0), self.power)
        return [warmup * ((base - self.end_lr) * decay + self.end_lr) for base in self.base_lrs]


def build_poly_lr_scheduler(cfg, optimizer):
    """
    Args:
        cfg (CfgNode): ``SOLVER.MAX_ITER``, ``WARMUP_*``, ``POLY_LR_POWER``, ``POLY_LR_END``.
        optimizer (torch.optim.Optimizer): the optimizer.

    Returns:
        WarmupPolyLRWithFloor
    """
    s = cfg.SOLVER
    if s.POLY_LR_CONSTANT_ENDING:
        raise ValueError(
            "SOLVER.POLY_LR_CONSTANT_ENDING (DeepLab's) is not used by detpre's poly schedule; "
            "set SOLVER.POLY_LR_END, the absolute floor"
        )
    return WarmupPolyLRWithFloor(
        optimizer,
        s.MAX_ITER,
        end_lr=s.POLY_LR_END,
        warmup_factor=s.WARMUP_FACTOR,
        warmup_iters=s.WARMUP_ITERS,
        warmup_method=s.WARMUP_METHOD,
        power=s.POLY_LR_POWER,
    )
