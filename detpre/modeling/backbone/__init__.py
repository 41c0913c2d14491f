"""Backbones built from yacs keys, registered in Detectron2's BACKBONE_REGISTRY."""

from .vit import build_vit, build_vitdet_backbone

__all__ = ["build_vit", "build_vitdet_backbone"]
