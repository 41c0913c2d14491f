"""The patch-cluster prediction head of LOCA (kept under ``ssl_head.*``, never exported)."""

import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeHead"]


class PrototypeHead(nn.Module):
    """
    The cluster head of LOCA (Caron et al., "Location-Aware Self-Supervised Transformers for
    Semantic Segmentation", 2022), DINO-style: ``num_layers x (Linear - GELU)``, a linear
    bottleneck, L2 normalisation, then cosine scores against K prototypes whose weight vectors are
    L2-normalised at every call (weight normalisation without a learned gain). Input (..., D),
    output (..., K) scores in [-1, 1].
    """

    def __init__(
        self, in_dim, *, hidden_dim=2048, num_layers=2, bottleneck_dim=256, num_prototypes=4096
    ):
        """
        Args:
            in_dim (int): token width.
            hidden_dim (int): hidden width of the MLP.
            num_layers (int): number of Linear-GELU layers, >= 1.
            bottleneck_dim (int): width of the normalised embedding.
            num_prototypes (int): K.
        """
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"LOCA.HEAD_NUM_LAYERS must be >= 1, got {num_layers}")
        layers = []
        for i in range(num_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.GELU()]
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Linear(bottleneck_dim, num_prototypes, bias=False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def num_prototypes(self):
        return self.prototypes.out_features

    def forward(self, x):
        """
        Args:
            x (Tensor): (..., in_dim) tokens.

        Returns:
            Tensor: (..., K) cosine similarities to the prototypes.
        """
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes.weight, dim=1))
