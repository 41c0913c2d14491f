"""
SlotCon's two losses: the cross-view grouping (self-distillation of pixel assignments) and the
contrast of slots (InfoNCE between slots of one prototype in two views).
"""

import torch
import torch.nn.functional as F
from detectron2.utils import comm

from ..ssl.precision import float32_outside_autocast
from ..ssl.shuffle_bn import concat_all_gather

__all__ = ["grouping_loss", "slot_contrast_loss", "valid_slots"]


@float32_outside_autocast
def grouping_loss(student_logits, teacher_logits, center, student_temp, teacher_temp, weights=None):
    """
    Per-pixel cross-entropy between the teacher's assignment ``softmax_k((t - c) / T_t)`` and the
    student's ``log_softmax_k(s / T_s)``, averaged over pixels (of the images with weight > 0).

    Args:
        student_logits (Tensor): (N, K, H, W) student pixel-prototype logits (aligned).
        teacher_logits (Tensor): (N, K, H, W) teacher logits at the same places (no gradient).
        center (Tensor): (K,) centre subtracted from the teacher logits.
        student_temp (float): T_s.
        teacher_temp (float): T_t.
        weights (Tensor or None): (N,) weight of each image (0 leaves it out); all 1 when None.

    Returns:
        Tensor: scalar loss (0, with a gradient path, when every weight is 0).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 4:
        raise ValueError(
            f"grouping_loss needs two (N, K, H, W) maps of one shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=1)
    target = F.softmax(
        (teacher_logits.detach().float() - center[None, :, None, None]) / teacher_temp, dim=1
    )
    per_image = -(target * log_p).sum(dim=1).flatten(1).mean(dim=1)
    if weights is None:
        return per_image.mean()
    weights = weights.to(per_image)
    # A zero total weight gives 0 / tiny = 0, keeping the graph.
    return (per_image * weights).sum() / weights.sum().clamp(min=torch.finfo(torch.float32).tiny)


def valid_slots(logits):
    """
    A prototype's slot is valid in a view when the prototype is the argmax of at least one pixel.

    Args:
        logits (Tensor): (N, K, H, W) pixel-prototype logits.

    Returns:
        Tensor: (N, K) bool.
    """
    n, k = logits.shape[:2]
    winners = logits.detach().argmax(dim=1).flatten(1)
    won = torch.zeros(n, k, dtype=torch.bool, device=logits.device)
    return won.scatter_(1, winners, True)


@float32_outside_autocast
def slot_contrast_loss(query_slots, key_slots, query_valid, key_valid, predictor, temperature):
    """
    InfoNCE of slots: every slot valid in both views (its prototype wins pixels of the student's
    first view and of the teacher's second view) is passed through ``predictor``; its positive is
    the teacher slot of the same image and prototype, its negatives every other valid teacher slot
    of every rank. The loss is scaled by ``2 T``.

    Args:
        query_slots (Tensor): (N, K, D) student slots of one view.
        key_slots (Tensor): (N, K, D) teacher slots of the other view (no gradient).
        query_valid (Tensor): (N, K) bool, valid student slots (:func:`valid_slots`).
        key_valid (Tensor): (N, K) bool, valid teacher slots.
        predictor (callable): (M, D) -> (M, D), the student's slot predictor.
        temperature (float): T.

    Returns:
        tuple[Tensor, Tensor]: the loss (scalar) and the top-1 accuracy (scalar; 0 when fewer
        than two slots are valid in both views, where the loss is a zero that still runs the
        predictor, so every rank takes part in its norms and every parameter has a gradient).
    """
    n, k, d = query_slots.shape
    if key_slots.shape != (n, k, d) or query_valid.shape != (n, k) or key_valid.shape != (n, k):
        raise ValueError(
            f"slot_contrast_loss: slots {tuple(query_slots.shape)}, {tuple(key_slots.shape)} and "
            f"masks {tuple(query_valid.shape)}, {tuple(key_valid.shape)} disagree"
        )
    if temperature <= 0:
        raise ValueError(f"SLOTCON.CONTRAST_TEMP must be positive, got {temperature}")
    q = query_slots.flatten(0, 1)
    idx_q = (query_valid & key_valid).flatten().nonzero().squeeze(1)
    if idx_q.numel() < 2:
        # Norm layers need two samples: run the predictor on every slot, for a zero loss.
        return predictor(q).sum() * 0.0, q.new_zeros(())
    keys = concat_all_gather(F.normalize(key_slots.detach().flatten(0, 1).float(), dim=1))
    keys_valid = concat_all_gather(key_valid.flatten().to(torch.uint8)).bool()
    idx_k = keys_valid.nonzero().squeeze(1)
    pred = F.normalize(predictor(q[idx_q]).float(), dim=1)
    logits = pred @ keys[idx_k].t() / temperature
    # The positive's column: its rank among the gathered valid keys.
    labels = keys_valid.long().cumsum(0)[idx_q + n * k * comm.get_rank()] - 1
    loss = F.cross_entropy(logits, labels) * (2.0 * temperature)
    acc = (logits.argmax(dim=1) == labels).float().mean().detach()
    return loss, acc
