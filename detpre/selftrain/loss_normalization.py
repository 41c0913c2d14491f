"""Loss normalization of the student: Zoph et al., "Rethinking Pre-training and Self-training",
NeurIPS 2020, Appendix B ("Loss normalization")."""

from typing import Tuple

import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.utils import comm

__all__ = ["LossNormalizer"]


class LossNormalizer:
    """
    Weighs the human-label loss ``L_h`` and the pseudo-label loss ``L_p`` of the student as in
    Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS 2020:

        L = (L_h + a * (avg(L_h) / avg(L_p)) * L_p) / (1 + a)

    where ``avg`` are moving averages over training of the two losses.

    From the paper (Appendix B): the formula; the unnormalised ``L_h + a * L_p`` as the
    alternative (``enabled=False``); exponential moving averages with decay 0.9997; a tuned per
    setting in {0.25, 0.5, 1, 2, 3, 4} (COCO + ImageNet, Appendix H: 1.0 for Augment-S1 / S2, 0.5
    for S3 / S4). detpre's choices, not stated in the paper: the averages start at the first
    losses (no zero start, so no bias correction is needed); each step's losses are averaged over
    all processes first (one all-reduce of two numbers), so every rank applies the same weights;
    the ratio is a constant for autograd (gradients flow through ``L_h`` and ``L_p`` only); a = 1
    by default.

    The averages are part of the training state (:meth:`state_dict`), so a resumed run continues
    with the same weights.
    """

    @configurable
    def __init__(
        self, *, alpha: float = 1.0, momentum: float = 0.9997, enabled: bool = True, eps=1e-8
    ):
        """
        Args:
            alpha (float): a, the weight of the pseudo-label loss; >= 0.
            momentum (float): m in [0, 1) of ``avg <- m * avg + (1 - m) * loss``; the averages
                start at the first losses.
            enabled (bool): normalize; off gives ``L_h + a * L_p``.
            eps (float): lower bound of ``avg(L_p)`` in the ratio.
        """
        if alpha < 0:
            raise ValueError(f"SELF_TRAIN.LOSS_NORM.ALPHA must be >= 0, got {alpha}")
        if not 0 <= momentum < 1:
            raise ValueError(f"SELF_TRAIN.LOSS_NORM.MOMENTUM must be in [0, 1), got {momentum}")
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.enabled = bool(enabled)
        self.eps = float(eps)
        self.avg_human = None
        self.avg_pseudo = None

    @classmethod
    def from_config(cls, cfg):
        node = cfg.SELF_TRAIN.LOSS_NORM
        return {"alpha": node.ALPHA, "momentum": node.MOMENTUM, "enabled": node.ENABLED}

    @property
    def human_weight(self) -> float:
        """The constant factor of ``L_h``: 1 / (1 + a), or 1 without normalization."""
        return 1.0 / (1.0 + self.alpha) if self.enabled else 1.0

    @property
    def ratio(self) -> float:
        """avg(L_h) / avg(L_p) after the last :meth:`update` (1 before the first)."""
        if self.avg_human is None:
            return 1.0
        return self.avg_human / max(self.avg_pseudo, self.eps)

    @property
    def pseudo_weight(self) -> float:
        """The factor of ``L_p``: a * ratio / (1 + a), or a without normalization."""
        if not self.enabled:
            return self.alpha
        return self.alpha * self.ratio / (1.0 + self.alpha)

    def update(self, loss_human: torch.Tensor, loss_pseudo: torch.Tensor) -> Tuple[float, float]:
        """
        Average this step's losses over all processes and fold them into the moving averages.
        Every process must call it at every step (it all-reduces).

        Args:
            loss_human (Tensor): scalar, this process's ``L_h``.
            loss_pseudo (Tensor): scalar, this process's ``L_p``.

        Returns:
            tuple[float, float]: ``L_h`` and ``L_p`` averaged over the processes.
        """
        losses = torch.stack([loss_human.detach().float(), loss_pseudo.detach().float()])
        if comm.get_world_size() > 1:
            dist.all_reduce(losses)
            losses /= comm.get_world_size()
        human, pseudo = losses.tolist()
        if self.avg_human is None:
            self.avg_human, self.avg_pseudo = human, pseudo
        else:
            m = self.momentum
            self.avg_human = m * self.avg_human + (1 - m) * human
            self.avg_pseudo = m * self.avg_pseudo + (1 - m) * pseudo
        return human, pseudo

    def __call__(self, loss_human: torch.Tensor, loss_pseudo: torch.Tensor) -> torch.Tensor:
        """
        :meth:`update` with this step's losses, then combine them.

        Args:
            loss_human (Tensor): scalar ``L_h`` (with its graph).
            loss_pseudo (Tensor): scalar ``L_p`` (with its graph).

        Returns:
            Tensor: scalar, the normalized loss ``L``.
        """
        self.update(loss_human, loss_pseudo)
        return self.human_weight * loss_human + self.pseudo_weight * loss_pseudo

    def state_dict(self):
        return {"avg_human": self.avg_human, "avg_pseudo": self.avg_pseudo}

    def load_state_dict(self, state_dict):
        self.avg_human = state_dict["avg_human"]
        self.avg_pseudo = state_dict["avg_pseudo"]
