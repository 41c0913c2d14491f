"""The cross-attention block of LOCA's position prediction (kept under ``ssl_head.*``)."""

from torch import nn

__all__ = ["CrossAttentionBlock"]


class CrossAttentionBlock(nn.Module):
    """
    A pre-norm transformer block whose attention takes its queries from one token set and its keys
    and values from another (LOCA, Caron et al., "Location-Aware Self-Supervised Transformers for
    Semantic Segmentation", 2022): ``x + Attn(LN(x), LN'(kv))``, then ``x + MLP(LN''(x))`` with a
    GELU MLP. Each side has its own LayerNorm, as in the release.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, eps=1e-6):
        """
        Args:
            dim (int): token width of both sets.
            num_heads (int): attention heads; must divide ``dim``.
            mlp_ratio (float): MLP hidden width over ``dim``.
            eps (float): LayerNorm epsilon.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Token width {dim} is not divisible by {num_heads} attention heads")
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_kv = nn.LayerNorm(dim, eps=eps)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x, kv):
        """
        Args:
            x (Tensor): (N, L, dim) query tokens.
            kv (Tensor): (N, S, dim) key / value tokens.

        Returns:
            Tensor: (N, L, dim)
        """
        kv = self.norm_kv(kv)
        x = x + self.attn(self.norm_q(x), kv, kv, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))
