"""Projection heads of the contrastive pretext tasks (kept under ``ssl_head.*``, never exported)."""

from collections import OrderedDict

from detectron2.config import configurable
from torch import nn

__all__ = ["MLPProjection"]


class MLPProjection(nn.Sequential):
    """
    The 2-layer MLP projection of MoCo-v2 (Chen et al., "Improved Baselines with Momentum
    Contrastive Learning", 2020): ``Linear(in, hidden) - ReLU - Linear(hidden, out)``.
    Input (N, in_dim), output (N, out_dim), not normalised.
    """

    @configurable
    def __init__(self, *, in_dim, hidden_dim, out_dim):
        """
        Args:
            in_dim (int): width of the pooled feature.
            hidden_dim (int): hidden width.
            out_dim (int): embedding width.
        """
        super().__init__(
            OrderedDict(
                fc1=nn.Linear(in_dim, hidden_dim),
                relu=nn.ReLU(inplace=True),
                fc2=nn.Linear(hidden_dim, out_dim),
            )
        )

    @classmethod
    def from_config(cls, cfg, in_dim):
        return {
            "in_dim": in_dim,
            "hidden_dim": cfg.SSL.PROJ_HIDDEN_DIM,
            "out_dim": cfg.SSL.PROJ_DIM,
        }
