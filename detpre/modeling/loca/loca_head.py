"""The pretraining-only parts of LOCA's network (kept under ``ssl_head.*``, never exported)."""

import torch
from torch import nn

from .cross_attention import CrossAttentionBlock

__all__ = ["LocaHead"]

_LN_EPS = 1e-6


class LocaHead(nn.Module):
    """
    The pretraining-only parts of LOCA (``ssl_head.*``): the norm closing the encoder, for ResNet
    trunks the 1x1 projection of res5 (dilated) into tokens and a learned position embedding of the
    reference grid, the patch-cluster head, and the position predictor (one pre-norm
    cross-attention block, a LayerNorm and a linear classifier over the reference cells).
    """

    def __init__(self, *, dim, num_positions, num_heads, mlp_ratio, cluster_head, in_channels=None):
        """
        Args:
            dim (int): token width.
            num_positions (int): cells of the reference grid (classes of the position task).
            num_heads (int): heads of the cross-attention block.
            mlp_ratio (float): MLP width of the cross-attention block over ``dim``.
            cluster_head (PrototypeHead or None): the cluster head; None without cluster loss.
            in_channels (int or None): channels of a convolutional feature map turned into tokens
                by a 1x1 projection (dilated ResNet res5); None for a ViT, whose tokens are
                ``dim`` wide.
        """
        super().__init__()
        self.encoder_norm = nn.LayerNorm(dim, eps=_LN_EPS)
        if in_channels is not None:
            self.token_proj = nn.Conv2d(in_channels, dim, kernel_size=1)
            self.ref_pos_embed = nn.Parameter(torch.zeros(1, num_positions, dim))
            nn.init.trunc_normal_(self.ref_pos_embed, std=0.02)
        else:
            self.token_proj = self.ref_pos_embed = None
        self.cluster_head = cluster_head
        self.cross_attention = CrossAttentionBlock(dim, num_heads, mlp_ratio, eps=_LN_EPS)
        self.position_norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.position_classifier = nn.Linear(dim, num_positions)

    def predict_positions(self, query_tokens, ref_tokens, ref_index):
        """
        Args:
            query_tokens (Tensor): (N, L, dim).
            ref_tokens (Tensor): (N, S, dim) kept reference tokens of each query's reference.
            ref_index (Tensor): (S,) int64 grid cells of the kept reference tokens.

        Returns:
            Tensor: (N, L, num_positions) logits.
        """
        if self.ref_pos_embed is not None:
            ref_tokens = ref_tokens + self.ref_pos_embed[:, ref_index]
        x = self.cross_attention(query_tokens, ref_tokens)
        return self.position_classifier(self.position_norm(x))
