"""The optimizer of a pretraining run, by ``SSL.OPTIMIZER``: SGD, LARS or AdamW."""

import torch
from detectron2.solver import build_optimizer
from detectron2.solver.build import maybe_add_gradient_clipping

from .lars import LARS

__all__ = ["build_pretrain_optimizer", "split_decay_groups"]


def split_decay_groups(model, weight_decay):
    """
    Two parameter groups of the trainable parameters: tensors with more than one dimension
    (weights of convs and linears) with ``weight_decay``, and 1-D tensors (biases, norm scales
    and shifts) without decay and with ``lars_exclude`` set, as SlotCon, LOCA and DINO do.

    Args:
        model (nn.Module): the model.
        weight_decay (float): decay of the multi-dimensional weights.

    Returns:
        list[dict]: parameter groups (empty groups left out).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]


def build_pretrain_optimizer(cfg, model):
    """
    Args:
        cfg (CfgNode): the pretraining config. ``SSL.OPTIMIZER`` picks the optimizer:
            "SGD" is Detectron2's ``build_optimizer`` (SOLVER.MOMENTUM, NESTEROV, WEIGHT_DECAY,
            WEIGHT_DECAY_NORM); "LARS" (SOLVER.MOMENTUM, SSL.LARS_ETA) and "AdamW"
            (SSL.ADAMW_BETAS) decay only multi-dimensional weights by SOLVER.WEIGHT_DECAY.
            SOLVER.CLIP_GRADIENTS applies to all three.
        model (nn.Module): the model; only parameters with ``requires_grad`` are optimised.

    Returns:
        torch.optim.Optimizer
    """
    name = cfg.SSL.OPTIMIZER
    if name == "SGD":
        return build_optimizer(cfg, model)
    groups = split_decay_groups(model, cfg.SOLVER.WEIGHT_DECAY)
    if name == "LARS":
        optimizer = LARS(
            groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, eta=cfg.SSL.LARS_ETA
        )
    elif name == "AdamW":
        for g in groups:
            g.pop("lars_exclude")
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SSL.ADAMW_BETAS)
        )
    else:
        raise ValueError(f"SSL.OPTIMIZER must be 'SGD', 'LARS' or 'AdamW', got {name!r}")
    return maybe_add_gradient_clipping(cfg, optimizer)
