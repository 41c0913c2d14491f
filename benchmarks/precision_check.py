"""
The loss of one training forward in float32 and under mixed precision, from the same weights,
inputs and random draws (``gpu_check.py``'s first-iteration check).
"""

import contextlib
import copy
import math

import torch
from detectron2.utils.events import EventStorage

__all__ = ["LOSS_TOLERANCE", "compare_losses", "exact_float32", "first_loss"]

# |mixed-precision loss - float32 loss| / |float32 loss| above this is flagged. Measured on 2
# synthetic images per method, random weights, bfloat16 on a CPU (2026-12-06): 0.003 %
# (LOCA ViT-B) to 0.63 % (SlotCon R50-FPN).
LOSS_TOLERANCE = {"bfloat16": 0.05, "float16": 0.02}


@contextlib.contextmanager
def exact_float32():
    """No TF32 in CUDA matmuls and convolutions (the float32 reference); restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def first_loss(model, batch, dtype=None, channels_last=False, seed=1):
    """
    The summed loss of one forward of a copy of ``model`` (its queues, centres and BN statistics
    untouched), in train mode, without gradients.

    Args:
        model (nn.Module): the method's model, in train mode.
        batch (list[dict]): its mapped inputs (images uint8 (3, H, W)), on the model's device.
        dtype (torch.dtype or None): the autocast dtype; None runs float32 without TF32.
        channels_last (bool): run the copy in channels-last memory format.
        seed (int): torch's seed before the forward (shuffle-BN, box jitter, samplers).

    Returns:
        float: the sum of the loss dict.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(memory_format=layout)
    device = next(model.parameters()).device.type
    torch.manual_seed(seed)
    with contextlib.ExitStack() as stack:
        stack.enter_context(EventStorage(0))
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch.autocast(device, dtype=dtype, enabled=dtype is not None))
        if dtype is None:
            stack.enter_context(exact_float32())
        losses = model(batch)
    return float(sum(float(v) for v in losses.values()))


def compare_losses(loss32, loss_amp, precision):
    """
    Args:
        loss32, loss_amp (float): the float32 and the mixed-precision loss.
        precision (str): "bfloat16" or "float16" (its LOSS_TOLERANCE).

    Returns:
        dict: "loss_float32", "loss_amp", "loss_rel_diff" and "loss_ok" (both finite and the
        relative difference within the tolerance).
    """
    rel = abs(loss_amp - loss32) / abs(loss32) if loss32 else math.inf
    finite = math.isfinite(loss32) and math.isfinite(loss_amp)
    ok = finite and rel <= LOSS_TOLERANCE[precision]
    return {"loss_float32": loss32, "loss_amp": loss_amp, "loss_rel_diff": rel, "loss_ok": ok}
