"""
Float32 islands under mixed precision: the parts of the pretext losses that float16 / bfloat16
cannot carry (logits divided by temperatures of 0.05-0.2 and their softmax, Sinkhorn's
``exp(x / 0.05)``, running centres and queues).
"""

import functools

import torch

__all__ = ["autocast_enabled", "float32_outside_autocast"]

_DEVICE_TYPES = ("cuda", "cpu")


def autocast_enabled():
    """Whether ``torch.autocast`` is on for CUDA or CPU in this thread."""
    return any(torch.is_autocast_enabled(device) for device in _DEVICE_TYPES)


def _to_float32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float32(v) for k, v in x.items()}
    return x


def float32_outside_autocast(fn):
    """
    Decorate ``fn`` to run in float32 whatever autocast is on: autocast is turned off for CUDA and
    CPU inside it and its floating-point tensor arguments (also inside lists, tuples and dicts) are
    cast to float32 (the cast is differentiable, so gradients flow back in the caller's dtype).
    Without autocast, ``fn`` runs unchanged.

    Args:
        fn (callable): a function or method of tensors.

    Returns:
        callable: the wrapped function.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not autocast_enabled():
            return fn(*args, **kwargs)
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*_to_float32(args), **_to_float32(kwargs))

    return wrapper
