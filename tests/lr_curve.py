"""The learning rate of every iteration of a derived pretraining config, as the trainer sets it."""

import torch
from detectron2.solver import build_lr_scheduler

__all__ = ["lr_curve"]


def lr_curve(cfg):
    """
    Args:
        cfg (CfgNode): a config after ``derive_schedule`` (SOLVER.* in iterations).

    Returns:
        list[float]: the lr of iterations 0 .. MAX_ITER - 1 (Detectron2's scheduler, stepped
        after each optimizer step as its LRScheduler hook does).
    """
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    out = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out
