"""
InsLoc's bounding-box augmentation (Yang et al., "Instance Localization for Self-supervised
Detection Pretraining", CVPR 2021, Sec. 3.3): the query pools a random anchor that overlaps the
true box instead of the box itself, so the embedding must be robust to imprecise localisation.
"""

import math
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, pairwise_iou
from torch import nn

__all__ = ["AnchorBoxJitter"]


class AnchorBoxJitter(nn.Module):
    """
    Replace each box by an anchor drawn uniformly among those of the view's anchor grid (one
    stride, several sizes and aspect ratios, Detectron2's ``DefaultAnchorGenerator``) whose IoU
    with the box exceeds a threshold; when no anchor does, by one of the highest-IoU anchors.
    Holds no state-dict tensors.
    """

    @configurable
    def __init__(self, *, sizes, aspect_ratios, stride, iou_threshold=0.5):
        """
        Args:
            sizes (list[float]): anchor sizes (sqrt of area) in pixels.
            aspect_ratios (list[float]): anchor aspect ratios (height / width).
            stride (int): the anchor grid's step in pixels.
            iou_threshold (float): anchors with IoU above this are candidates.
        """
        super().__init__()
        self.stride = int(stride)
        self.iou_threshold = iou_threshold
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[list(sizes)],
            aspect_ratios=[list(aspect_ratios)],
            strides=[self.stride],
            offset=0.0,
        )

    @classmethod
    def from_config(cls, cfg):
        return {
            "sizes": cfg.INSLOC.BOX_AUG_SIZES,
            "aspect_ratios": cfg.INSLOC.BOX_AUG_ASPECT_RATIOS,
            "stride": cfg.INSLOC.BOX_AUG_STRIDE,
            "iou_threshold": cfg.INSLOC.BOX_AUG_IOU,
        }

    def anchors(self, image_size):
        """
        Args:
            image_size (tuple[int, int]): (height, width) of the view.

        Returns:
            Boxes: every anchor of the ceil(H / stride) x ceil(W / stride) grid, XYXY pixels.
        """
        h, w = image_size
        grid = torch.empty(
            (1, 0, math.ceil(h / self.stride), math.ceil(w / self.stride)),
            device=next(iter(self.anchor_generator.cell_anchors)).device,
        )
        return self.anchor_generator([grid])[0]

    @torch.no_grad()
    def forward(self, boxes: List[Boxes], image_sizes: List[Tuple[int, int]], generator=None):
        """
        Args:
            boxes (list[Boxes]): per view, its (M, 4) true boxes.
            image_sizes (list[tuple[int, int]]): per view, (height, width).
            generator (torch.Generator or None): random source (the global one when None).

        Returns:
            list[Boxes]: per view, (M, 4) jittered boxes.
        """
        if len(boxes) != len(image_sizes):
            raise ValueError(f"{len(boxes)} box sets for {len(image_sizes)} image sizes")
        anchors_by_size = {}
        out = []
        for b, size in zip(boxes, image_sizes):
            size = (int(size[0]), int(size[1]))
            if size not in anchors_by_size:
                anchors_by_size[size] = self.anchors(size)
            anchors = anchors_by_size[size]
            if len(b) == 0:
                out.append(b.clone())
                continue
            iou = pairwise_iou(b.to(anchors.device), anchors)  # (M, A)
            candidates = iou > self.iou_threshold
            best = iou == iou.max(dim=1, keepdim=True).values
            none = ~candidates.any(dim=1, keepdim=True)
            candidates = torch.where(none, best, candidates)
            idx = torch.multinomial(candidates.float(), 1, generator=generator).squeeze(1)
            out.append(Boxes(anchors.tensor[idx].to(b.device)))
        return out
