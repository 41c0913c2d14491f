"""
LARS: You et al., "Large Batch Training of Convolutional Networks", 2017, in the form the
self-supervised releases use (BYOL, Barlow Twins, SlotCon): SGD with momentum whose update of each
tensor is rescaled by a trust ratio ``eta * ||w|| / ||g + wd * w||``; a parameter group with
``lars_exclude`` set (biases and norm layers) gets neither weight decay nor the trust ratio.
"""

import torch

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """
    LARS (You et al., 2017) as used by SlotCon (Wen et al., NeurIPS 2022): momentum SGD with
    layer-wise trust ratio; groups with ``lars_exclude=True`` are plain momentum SGD without decay.
    """

    def __init__(self, params, lr, *, momentum=0.9, weight_decay=0.0, eta=0.001):
        """
        Args:
            params: parameters or parameter groups (a group may set ``lars_exclude``).
            lr (float): learning rate.
            momentum (float): momentum of the update buffer.
            weight_decay (float): L2 weight decay, added to the gradient before the trust ratio.
            eta (float): trust coefficient.
        """
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"Bad LARS arguments: lr {lr}, momentum {momentum}, weight_decay {weight_decay}, "
                f"eta {eta}"
            )
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not group["lars_exclude"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(update)
                    one = torch.ones_like(w_norm)
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, one
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss
