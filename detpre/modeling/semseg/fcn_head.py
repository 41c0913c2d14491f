"""mmseg's FCN decode head (and its auxiliary head) as a Detectron2 semantic-segmentation head."""

from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from .losses import check_targets, sem_seg_cross_entropy

__all__ = ["FCNBranch", "FCNHead"]


def _conv_norm_relu(in_channels, out_channels, kernel_size, dilation, norm):
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=dilation * (kernel_size // 2),
        dilation=dilation,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    weight_init.c2_msra_fill(conv)  # kaiming normal, fan_out, as mmcv's ConvModule
    return conv


class FCNBranch(nn.Module):
    """
    One mmseg ``FCNHead``: ``num_convs`` 3x3 conv-norm-ReLU layers, optionally the input
    concatenated to their output and one more 3x3 conv ("conv_cat"), Dropout2d, and the 1x1
    classifier ("conv_seg", normal(0, 0.01) weights, zero bias).
    """

    def __init__(
        self,
        in_channels,
        *,
        num_classes,
        conv_dims,
        num_convs,
        concat_input,
        dropout,
        norm,
        conv_dilation=1,
    ):
        """
        Args:
            in_channels (int): channels of the input feature.
            num_classes (int): classes predicted.
            conv_dims (int): channels of the convs.
            num_convs (int): number of 3x3 convs (0 keeps the input, as mmseg allows).
            concat_input (bool): concatenate the input before one more 3x3 conv.
            dropout (float): Dropout2d probability before the classifier.
            norm (str): Detectron2 norm name ("SyncBN", "BN", "" for none).
            conv_dilation (int): dilation of the 3x3 convs (6 in MoCo's VOC / Cityscapes head).
        """
        super().__init__()
        convs = []
        for i in range(num_convs):
            convs.append(
                _conv_norm_relu(
                    in_channels if i == 0 else conv_dims, conv_dims, 3, conv_dilation, norm
                )
            )
        self.convs = nn.Sequential(*convs)
        out_channels = conv_dims if num_convs else in_channels
        self.conv_cat = (
            _conv_norm_relu(in_channels + conv_dims, conv_dims, 3, 1, norm)
            if concat_input
            else None
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(out_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x):
        """
        Args:
            x (Tensor): (N, C_in, h, w).

        Returns:
            Tensor: (N, num_classes, h, w) logits.
        """
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.conv_seg(self.dropout(out))


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(nn.Module):
    """
    The FCN head of mmseg's FCN R50-D8 / D16 (Long, Shelhamer and Darrell, Fully Convolutional
    Networks for Semantic Segmentation, CVPR 2015), the segmentation protocol of SlotCon's release
    (``transfer/segmentation/configs``): a decode :class:`FCNBranch` on one backbone feature and,
    in training only, an auxiliary branch (one conv) on another with its own loss weight. Logits
    are upsampled to the label size for the loss and to the padded image size in inference.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        conv_dims: int,
        num_convs: int,
        concat_input: bool,
        dropout: float,
        norm: str,
        conv_dilation: int,
        ignore_value: int,
        loss_weight: float,
        avg_non_ignore: bool,
        align_corners: bool,
        aux_in_feature: str = "",
        aux_conv_dims: int = 256,
        aux_loss_weight: float = 0.4,
    ):
        """
        Args:
            input_shape (dict[str, ShapeSpec]): the backbone's outputs.
            in_feature (str): the decode branch's input (``MODEL.SEM_SEG_HEAD.IN_FEATURES[0]``).
            num_classes, conv_dims, num_convs, concat_input, dropout, norm, conv_dilation: see
                :class:`FCNBranch`.
            ignore_value (int): label of unlabelled pixels.
            loss_weight (float): weight of the decode loss.
            avg_non_ignore (bool): see :func:`sem_seg_cross_entropy`.
            align_corners (bool): of the bilinear upsampling in inference.
            aux_in_feature (str): the auxiliary branch's input, "" for none.
            aux_conv_dims (int): the auxiliary conv's channels.
            aux_loss_weight (float): weight of the auxiliary loss.
        """
        super().__init__()
        for name in (in_feature, aux_in_feature):
            if name and name not in input_shape:
                raise ValueError(
                    f"FCNHead: feature {name!r} is not among the backbone's outputs "
                    f"{sorted(input_shape)} (MODEL.RESNETS.OUT_FEATURES)"
                )
        self.in_feature = in_feature
        self.common_stride = input_shape[in_feature].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.align_corners = align_corners
        self.decode = FCNBranch(
            input_shape[in_feature].channels,
            num_classes=num_classes,
            conv_dims=conv_dims,
            num_convs=num_convs,
            concat_input=concat_input,
            dropout=dropout,
            norm=norm,
            conv_dilation=conv_dilation,
        )
        self.aux_in_feature = aux_in_feature
        self.aux_loss_weight = aux_loss_weight
        if aux_in_feature:
            self.aux = FCNBranch(
                input_shape[aux_in_feature].channels,
                num_classes=num_classes,
                conv_dims=aux_conv_dims,
                num_convs=1,
                concat_input=False,
                dropout=dropout,
                norm=norm,
            )

    @classmethod
    def from_config(cls, cfg, input_shape):
        head, s = cfg.MODEL.SEM_SEG_HEAD, cfg.SEMSEG
        return {
            "input_shape": input_shape,
            "in_feature": head.IN_FEATURES[0],
            "num_classes": head.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "num_convs": s.NUM_CONVS,
            "concat_input": s.CONCAT_INPUT,
            "dropout": s.DROPOUT,
            "norm": head.NORM,
            "conv_dilation": s.CONV_DILATION,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
            "avg_non_ignore": s.LOSS_AVG_NON_IGNORE,
            "align_corners": s.ALIGN_CORNERS,
            "aux_in_feature": s.AUX_IN_FEATURE,
            "aux_conv_dims": s.AUX_CONVS_DIM,
            "aux_loss_weight": s.AUX_LOSS_WEIGHT,
        }

    def forward(self, features, targets=None):
        """
        Args:
            features (dict[str, Tensor]): backbone outputs, (N, C, h, w) each.
            targets (Tensor or None): (N, H, W) int64 labels of the padded batch, in training.

        Returns:
            (Tensor or None, dict): in training ``(None, losses)``; in inference the
            (N, num_classes, h * stride, w * stride) logits and ``{}``.
        """
        logits = self.decode(features[self.in_feature])
        if not self.training:
            size = [d * self.common_stride for d in logits.shape[-2:]]
            return (
                F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners),
                {},
            )
        check_targets(targets)
        losses = {"loss_sem_seg": self.loss_weight * self._loss(logits, targets)}
        if self.aux_in_feature:
            aux_logits = self.aux(features[self.aux_in_feature])
            losses["loss_sem_seg_aux"] = self.aux_loss_weight * self._loss(aux_logits, targets)
        return None, losses

    def _loss(self, logits, targets):
        return sem_seg_cross_entropy(
            logits,
            targets,
            ignore_value=self.ignore_value,
            avg_non_ignore=self.avg_non_ignore,
            align_corners=self.align_corners,
        )
