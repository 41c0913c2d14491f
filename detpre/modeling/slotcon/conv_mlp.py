"""The 1x1-convolution MLP heads of SlotCon (projector of pixels, predictor of slots)."""

from collections import OrderedDict

from detectron2.layers import Conv2d, get_norm
from torch import nn

__all__ = ["ConvMLP"]


class ConvMLP(nn.Sequential):
    """
    DINO's 3-layer head (Caron et al., "Emerging Properties in Self-Supervised Vision
    Transformers", ICCV 2021) as SlotCon (Wen et al., NeurIPS 2022) uses it, in 1x1-convolution
    form: ``conv(in, hidden) - norm - GELU - conv(hidden, hidden) - norm - GELU - conv(hidden,
    out)`` (``num_layers`` convs in all), weights truncated-normal (std 0.02), biases 0.

    On (N, C, H, W) it is SlotCon's pixel projector; on (N, C) vectors it is the same MLP with
    linear layers and 1-D norms (SlotCon's slot predictor), run as (N, C, 1, 1).
    """

    def __init__(self, in_dim, hidden_dim, out_dim, num_layers=3, norm="BN"):
        """
        Args:
            in_dim (int): input channels.
            hidden_dim (int): hidden channels.
            out_dim (int): output channels.
            num_layers (int): number of 1x1 convs, at least 1.
            norm (str): a Detectron2 norm name (``get_norm``) after each hidden conv; "" for none.
        """
        if num_layers < 1:
            raise ValueError(f"ConvMLP needs at least one layer, got num_layers={num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = OrderedDict()
        for i in range(num_layers):
            last = i == num_layers - 1
            layers[f"conv{i + 1}"] = Conv2d(
                dims[i],
                dims[i + 1],
                kernel_size=1,
                norm=None if last else get_norm(norm, dims[i + 1]),
                activation=None if last else nn.GELU(),
            )
        super().__init__(layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """
        Args:
            x (Tensor): (N, in_dim, H, W) or (N, in_dim).

        Returns:
            Tensor: (N, out_dim, H, W) or (N, out_dim).
        """
        if x.dim() == 2:
            return super().forward(x[:, :, None, None]).flatten(1)
        return super().forward(x)
