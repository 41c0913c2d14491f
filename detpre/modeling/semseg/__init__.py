"""Semantic-segmentation transfer: backbones and heads for Detectron2's ``SemanticSegmentor``."""

from .backbones import (
    DilatedResNet,
    ViTTokens,
    build_resnet_dilated_backbone,
    build_vit_tokens_backbone,
)
from .fcn_head import FCNBranch, FCNHead
from .linear_head import LinearSegHead
from .losses import sem_seg_cross_entropy

__all__ = [
    "DilatedResNet",
    "FCNBranch",
    "FCNHead",
    "LinearSegHead",
    "ViTTokens",
    "build_resnet_dilated_backbone",
    "build_vit_tokens_backbone",
    "sem_seg_cross_entropy",
]
