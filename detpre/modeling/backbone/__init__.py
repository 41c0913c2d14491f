"""Backbones built from yacs keys, registered in Detectron2's BACKBONE_REGISTRY."""

from .dilation import dilate_stage
from .vit import build_vit, build_vitdet_backbone

__all__ = ["build_vit", "build_vitdet_backbone", "dilate_stage"]
