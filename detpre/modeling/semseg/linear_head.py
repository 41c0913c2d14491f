"""Segmenter's linear decoder as a Detectron2 semantic-segmentation head."""

from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from .losses import check_targets, sem_seg_cross_entropy

__all__ = ["LinearSegHead"]

# The ViT's LayerNorm epsilon (ViTDet, MAE; Flax's default is 1e-6 too).
_LN_EPS = 1e-6


@SEM_SEG_HEADS_REGISTRY.register()
class LinearSegHead(nn.Module):
    """
    The linear decoder of Segmenter (Strudel et al., Segmenter: Transformer for Semantic
    Segmentation, ICCV 2021), the decoder LOCA's release names for its ADE20K number (Caron,
    Houlsby and Schmid, Location-Aware Self-Supervised Transformers for Semantic Segmentation,
    2022): the encoder's final LayerNorm on the last-layer patch tokens (``norm``: Detectron2's
    ViT has none, LOCA's and Segmenter's encoders end with one), then one linear map to the classes
    (``predictor``, a 1x1 conv; truncated-normal(0.02) weights, zero bias, as Segmenter's), the
    logits upsampled bilinearly to the image.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        dropout: float,
        ignore_value: int,
        loss_weight: float,
        avg_non_ignore: bool,
    ):
        """
        Args:
            input_shape (dict[str, ShapeSpec]): the backbone's outputs.
            in_feature (str): the token map (``MODEL.SEM_SEG_HEAD.IN_FEATURES[0]``).
            num_classes (int): classes predicted.
            dropout (float): dropout on the tokens before the linear map (Segmenter: 0).
            ignore_value (int): label of unlabelled pixels.
            loss_weight (float): weight of the loss.
            avg_non_ignore (bool): see :func:`sem_seg_cross_entropy` (Segmenter: True).
        """
        super().__init__()
        if in_feature not in input_shape:
            raise ValueError(
                f"LinearSegHead: feature {in_feature!r} is not among the backbone's outputs "
                f"{sorted(input_shape)} (MODEL.VIT.OUT_FEATURE)"
            )
        channels = input_shape[in_feature].channels
        self.in_feature = in_feature
        self.common_stride = input_shape[in_feature].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.norm = nn.LayerNorm(channels, eps=_LN_EPS)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.predictor = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.trunc_normal_(self.predictor.weight, std=0.02)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": input_shape,
            "in_feature": head.IN_FEATURES[0],
            "num_classes": head.NUM_CLASSES,
            "dropout": cfg.SEMSEG.DROPOUT,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
            "avg_non_ignore": cfg.SEMSEG.LOSS_AVG_NON_IGNORE,
        }

    def layers(self, features):
        """
        Args:
            features (dict[str, Tensor]): ``{in_feature: (N, C, h, w)}`` tokens.

        Returns:
            Tensor: (N, num_classes, h, w) logits.
        """
        x = features[self.in_feature].permute(0, 2, 3, 1)  # channels last for the LayerNorm
        x = self.dropout(self.norm(x)).permute(0, 3, 1, 2)
        return self.predictor(x)

    def forward(self, features, targets=None):
        """
        Args:
            features (dict[str, Tensor]): backbone outputs.
            targets (Tensor or None): (N, H, W) int64 labels of the padded batch, in training.

        Returns:
            (Tensor or None, dict): in training ``(None, {"loss_sem_seg"})``; in inference the
            (N, num_classes, h * stride, w * stride) logits and ``{}``.
        """
        logits = self.layers(features)
        if not self.training:
            return (
                F.interpolate(
                    logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False
                ),
                {},
            )
        check_targets(targets)
        loss = sem_seg_cross_entropy(
            logits, targets, ignore_value=self.ignore_value, avg_non_ignore=self.avg_non_ignore
        )
        return None, {"loss_sem_seg": self.loss_weight * loss}
