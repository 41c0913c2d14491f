"""SlotCon's grouping: pixels assigned to learnable prototypes, slots pooled by attention."""

import torch
import torch.nn.functional as F
from torch import nn

from ..ssl.precision import float32_outside_autocast

__all__ = ["SemanticGrouping", "attention_pool", "prototype_logits"]


@float32_outside_autocast
def prototype_logits(features, prototypes):
    """
    Cosine similarity of every pixel to every prototype.

    Args:
        features (Tensor): (N, D, H, W) projected pixels.
        prototypes (Tensor): (K, D) prototypes.

    Returns:
        Tensor: (N, K, H, W), values in [-1, 1].
    """
    return torch.einsum(
        "kd,ndhw->nkhw", F.normalize(prototypes, dim=1), F.normalize(features, dim=1)
    )


@float32_outside_autocast
def attention_pool(features, logits, temperature, eps=1e-6):
    """
    Slots by attention pooling: each prototype's slot is the average of the pixels weighted by
    ``softmax_k(logits / T) + eps``, the weights normalised over the pixels.

    Args:
        features (Tensor): (N, D, H, W) projected pixels (not normalised).
        logits (Tensor): (N, K, H, W) pixel-prototype similarities.
        temperature (float): T of the softmax over prototypes.
        eps (float): added to every weight, so a slot no pixel chooses is still defined.

    Returns:
        Tensor: (N, K, D) slots.
    """
    attn = (logits / temperature).softmax(dim=1) + eps
    attn = attn / attn.sum(dim=(2, 3), keepdim=True)
    return torch.einsum("ndhw,nkhw->nkd", features, attn)


class SemanticGrouping(nn.Module):
    """
    The grouping module of SlotCon (Wen et al., "Self-Supervised Visual Representation Learning
    with Semantic Grouping", NeurIPS 2022): K learnable prototypes (``prototypes.weight``, (K, D),
    initialised N(0, 1)); every pixel's cosine similarity to each prototype, and one slot per
    prototype pooled with the softmax assignments at temperature T.
    """

    def __init__(self, num_prototypes, dim, temperature=0.07, eps=1e-6):
        """
        Args:
            num_prototypes (int): K.
            dim (int): D, the projected pixel width.
            temperature (float): T of the attention pooling.
            eps (float): see :func:`attention_pool`.
        """
        super().__init__()
        if num_prototypes < 1 or dim < 1:
            raise ValueError(
                f"SemanticGrouping needs K >= 1 and D >= 1, got {num_prototypes}, {dim}"
            )
        if temperature <= 0:
            raise ValueError(f"SLOTCON.TEACHER_TEMP must be positive, got {temperature}")
        self.prototypes = nn.Embedding(num_prototypes, dim)
        self.temperature = temperature
        self.eps = eps

    @property
    def num_prototypes(self):
        return self.prototypes.num_embeddings

    def forward(self, features):
        """
        Args:
            features (Tensor): (N, D, H, W) projected pixels.

        Returns:
            tuple[Tensor, Tensor]: slots (N, K, D) and logits (N, K, H, W), the cosine similarity
            of each pixel to each prototype.
        """
        logits = prototype_logits(features, self.prototypes.weight)
        return attention_pool(features, logits, self.temperature, self.eps), logits
