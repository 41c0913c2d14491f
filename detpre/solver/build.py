"""The optimizer of a pretraining run, by ``SOLVER.OPTIMIZER``: SGD, LARS or AdamW."""

import torch
from detectron2.solver import build_optimizer
from detectron2.solver.build import maybe_add_gradient_clipping

from .lars import LARS

__all__ = [
    "build_pretrain_optimizer",
    "maybe_add_full_model_gradient_clipping",
    "split_decay_groups",
]

# SOLVER.CLIP_GRADIENTS.CLIP_TYPE value for clipping the global norm of all gradients together
# (torch's clip_grad_norm_ over the whole model, as the LOCA release and Mask2Former do);
# Detectron2's own "norm" clips each parameter's gradient separately, as DINO does.
FULL_MODEL = "full_model"


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


def maybe_add_full_model_gradient_clipping(optimizer, clip_cfg):
    """
    Make ``optimizer`` clip the global norm of all its gradients before each step, when
    ``clip_cfg.ENABLED`` and ``clip_cfg.CLIP_TYPE`` is "full_model" (in place, by subclassing its
    class, as Detectron2's ``maybe_add_gradient_clipping`` does for per-parameter clipping).

    Args:
        optimizer (torch.optim.Optimizer): the optimizer.
        clip_cfg (CfgNode): ``SOLVER.CLIP_GRADIENTS`` (CLIP_VALUE: max norm, NORM_TYPE: p).

    Returns:
        torch.optim.Optimizer: the same object.
    """
    if not (clip_cfg.ENABLED and clip_cfg.CLIP_TYPE == FULL_MODEL):
        return optimizer
    max_norm, norm_type = clip_cfg.CLIP_VALUE, clip_cfg.NORM_TYPE
    base = type(optimizer)

    class FullModelGradientClipping(base):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = base.__name__ + "WithFullModelGradientClip"
    optimizer.__class__ = FullModelGradientClipping
    return optimizer


def build_pretrain_optimizer(cfg, model):
    """
    Args:
        cfg (CfgNode): the pretraining config. ``SOLVER.OPTIMIZER`` picks the optimizer:
            "SGD" is Detectron2's ``build_optimizer`` (SOLVER.MOMENTUM, NESTEROV, WEIGHT_DECAY,
            WEIGHT_DECAY_NORM); "LARS" (SOLVER.MOMENTUM, SOLVER.LARS_ETA) and "AdamW"
            (SOLVER.ADAMW_BETAS) decay only multi-dimensional weights by SOLVER.WEIGHT_DECAY.
            SOLVER.CLIP_GRADIENTS applies to all three, with CLIP_TYPE "value" or "norm"
            (Detectron2's, per parameter) or "full_model" (the global norm of all gradients).
        model (nn.Module): the model; only parameters with ``requires_grad`` are optimised.

    Returns:
        torch.optim.Optimizer
    """
    name = cfg.SOLVER.OPTIMIZER
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL:
        # Detectron2's builders know only per-parameter clipping: build without, then add it.
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    if name == "SGD":
        return maybe_add_full_model_gradient_clipping(build_optimizer(cfg, model), clip)
    groups = split_decay_groups(model, cfg.SOLVER.WEIGHT_DECAY)
    if name == "LARS":
        optimizer = LARS(
            groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, eta=cfg.SOLVER.LARS_ETA
        )
    elif name == "AdamW":
        for g in groups:
            g.pop("lars_exclude")
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.ADAMW_BETAS)
        )
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD', 'LARS' or 'AdamW', got {name!r}")
    optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return maybe_add_full_model_gradient_clipping(optimizer, clip)
