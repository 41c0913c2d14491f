"""
Momentum (key / EMA-teacher) copies of online networks.

MoCo (He et al., CVPR 2020) keeps a key encoder whose parameters follow the query encoder by an
exponential moving average with a fixed momentum; BYOL-style methods (AlignDet, SlotCon, LOCA)
raise the momentum to 1 with a cosine schedule. The copy lives under ``momentum.<same name>``
so that exporting it is the same key filter as exporting the online network.
"""

import copy
import math
from typing import Dict

import torch
from torch import nn

from .precision import float32_outside_autocast

__all__ = ["build_momentum_copy", "momentum_update", "cosine_momentum", "MomentumCopy"]


def build_momentum_copy(online):
    """
    A copy of ``online`` with the same parameters and buffers whose parameters take no gradient.

    Args:
        online (nn.Module): the online (query / student) network.

    Returns:
        nn.Module: an independent deep copy with ``requires_grad=False`` on every parameter.
    """
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
@float32_outside_autocast
def momentum_update(online, target, momentum, copy_buffers=True):
    """
    In place: ``target_param = momentum * target_param + (1 - momentum) * online_param`` for every
    trainable parameter, frozen ones (``requires_grad=False`` online) copied, and (optionally)
    every buffer of ``online`` copied into ``target``.

    Args:
        online (nn.Module): the online network.
        target (nn.Module): its momentum copy, with the same parameter and buffer names.
        momentum (float): m in [0, 1]; 1 keeps ``target`` unchanged, 0 copies ``online``.
        copy_buffers (bool): copy the buffers (BN running statistics, counters) as well.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    online_params = dict(online.named_parameters())
    target_params = dict(target.named_parameters())
    if online_params.keys() != target_params.keys():
        missing = sorted(set(online_params) ^ set(target_params))[:5]
        raise ValueError(f"online and momentum networks differ in parameters: {missing}")
    for name, p_t in target_params.items():
        p_o = online_params[name].detach()
        if online_params[name].requires_grad:
            p_t.mul_(momentum).add_(p_o, alpha=1.0 - momentum)
        else:
            # A frozen online parameter: the EMA's fixed point, without float drift.
            p_t.copy_(p_o)
    if copy_buffers:
        online_buffers = dict(online.named_buffers())
        for name, b_t in target.named_buffers():
            b_t.copy_(online_buffers[name])


def cosine_momentum(base_momentum, iteration, max_iter):
    """
    The cosine momentum schedule of BYOL: ``1 - (1 - m0) * (cos(pi * t / T) + 1) / 2``, which is
    ``m0`` at ``t = 0`` and 1 at ``t = T``.

    Args:
        base_momentum (float): m0.
        iteration (int): t, clamped to [0, T].
        max_iter (int): T > 0.

    Returns:
        float
    """
    if max_iter <= 0:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    t = min(max(iteration, 0), max_iter)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * t / max_iter) + 1.0) / 2.0


class MomentumCopy(nn.Module):
    """
    Momentum copies of named sub-modules of a meta-architecture, held under the same names (so
    ``model.backbone`` has its copy at ``model.momentum.backbone``). Names may be dotted paths,
    for EMA teachers that need only part of a module: ``{"backbone": ..., "ssl_head.projector":
    ...}`` holds copies at ``momentum.backbone`` and ``momentum.ssl_head.projector`` (other
    children of ``ssl_head``, such as a student-only predictor, are not copied). The copies take
    no gradient; :meth:`update` moves them towards the online modules by a momentum the caller
    schedules.
    """

    def __init__(self, online: Dict[str, nn.Module]):
        """
        Args:
            online (dict[str, nn.Module]): dotted path on the owner -> online module.
        """
        super().__init__()
        self.names = tuple(online)
        for name, module in online.items():
            *parents, leaf = name.split(".")
            holder = self
            for part in parents:
                if part not in holder._modules:
                    holder.add_module(part, nn.Module())
                holder = holder._modules[part]
            if leaf in holder._modules:
                raise ValueError(f"MomentumCopy: {name!r} is given twice")
            holder.add_module(leaf, build_momentum_copy(module))

    @torch.no_grad()
    def update(self, owner, momentum, copy_buffers=True):
        """
        EMA step of every copy towards the module of the same name on ``owner``.

        Args:
            owner (nn.Module): the meta-architecture holding the online modules.
            momentum (float): m, see :func:`momentum_update`.
            copy_buffers (bool): see :func:`momentum_update`.
        """
        for name in self.names:  # get_submodule: names may be dotted paths
            momentum_update(
                owner.get_submodule(name), self.get_submodule(name), momentum, copy_buffers
            )

    @torch.no_grad()
    def reset(self, owner):
        """
        Make every copy equal to its online module again (e.g. after loading online weights
        that carry no momentum copy).

        Args:
            owner (nn.Module): the meta-architecture holding the online modules.
        """
        self.update(owner, 0.0)
