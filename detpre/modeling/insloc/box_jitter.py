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
from torchvision.ops import batched_nms

__all__ = ["AnchorBoxJitter"]


class AnchorBoxJitter(nn.Module):
    """
    Replace each box by a random anchor of the view's anchor grid (one stride, several sizes and
    aspect ratios, Detectron2's ``DefaultAnchorGenerator``) with the rule of the official
    release's ``AnchorAugHead`` (limbo0000/InstanceLoc): the candidates are the anchors whose IoU
    with the box exceeds ``iou_threshold`` (when none does, the ``fallback_topk`` anchors of
    highest IoU); they get uniform random scores and go through NMS at ``nms_threshold``; the
    jittered box is drawn uniformly among the boxes NMS keeps. Holds no state-dict tensors.
    """

    @configurable
    def __init__(
        self,
        *,
        sizes,
        aspect_ratios,
        stride,
        iou_threshold=0.5,
        nms_threshold=0.7,
        fallback_topk=4000,
    ):
        """
        Args:
            sizes (list[float]): anchor sizes (sqrt of area) in pixels.
            aspect_ratios (list[float]): anchor aspect ratios (height / width).
            stride (int): the anchor grid's step in pixels.
            iou_threshold (float): anchors with IoU above this are candidates.
            nms_threshold (float): IoU threshold of the NMS over randomly scored candidates;
                1.0 or more keeps every candidate (a uniform draw among them).
            fallback_topk (int): candidates when no anchor passes ``iou_threshold``.
        """
        super().__init__()
        self.stride = int(stride)
        self.iou_threshold = iou_threshold
        self.nms_threshold = nms_threshold
        if fallback_topk < 1:
            raise ValueError(f"INSLOC.BOX_AUG_FALLBACK_TOPK={fallback_topk} must be positive")
        self.fallback_topk = int(fallback_topk)
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
            "nms_threshold": cfg.INSLOC.BOX_AUG_NMS_THRESH,
            "fallback_topk": cfg.INSLOC.BOX_AUG_FALLBACK_TOPK,
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

    def candidate_mask(self, iou):
        """
        Args:
            iou (Tensor): (M, A) IoU of every anchor with each of M boxes.

        Returns:
            Tensor: (M, A) bool, the candidate anchors of each box: IoU above
            ``iou_threshold``, or the ``fallback_topk`` of highest IoU when none is.
        """
        above = iou > self.iou_threshold
        best = iou.topk(min(self.fallback_topk, iou.shape[1]), dim=1).indices
        fallback = torch.zeros_like(above).scatter_(1, best, True)
        return torch.where(above.any(dim=1, keepdim=True), above, fallback)

    @torch.no_grad()
    def forward(self, boxes: List[Boxes], image_sizes: List[Tuple[int, int]], generator=None):
        """
        Args:
            boxes (list[Boxes]): per view, its (M, 4) true boxes.
            image_sizes (list[tuple[int, int]]): per view, (height, width).
            generator (torch.Generator or None): random source (the global one when None); on
                the device of the anchor generator.

        Returns:
            list[Boxes]: per view, (M, 4) jittered boxes.
        """
        if len(boxes) != len(image_sizes):
            raise ValueError(f"{len(boxes)} box sets for {len(image_sizes)} image sizes")
        # Boxes are numbered across views; views of one size share one anchor grid and one
        # candidate search.
        first = [0]
        for b in boxes:
            first.append(first[-1] + len(b))
        views_by_size = {}
        for i, size in enumerate(image_sizes):
            views_by_size.setdefault((int(size[0]), int(size[1])), []).append(i)
        cand_boxes, cand_groups = [], []
        for size, views in views_by_size.items():
            anchors = self.anchors(size)
            true = Boxes.cat([boxes[i] for i in views]).to(anchors.device)
            if len(true) == 0:
                continue
            number = torch.cat([torch.arange(first[i], first[i + 1]) for i in views])
            rows, cols = self.candidate_mask(pairwise_iou(true, anchors)).nonzero(as_tuple=True)
            cand_boxes.append(anchors.tensor[cols])
            cand_groups.append(number.to(rows.device)[rows])
        num_boxes = first[-1]
        if num_boxes == 0:
            return [b.clone() for b in boxes]
        cand_boxes, cand_groups = torch.cat(cand_boxes), torch.cat(cand_groups)
        scores = torch.rand(len(cand_boxes), generator=generator, device=cand_boxes.device)
        if self.nms_threshold < 1.0:
            keep = batched_nms(cand_boxes, scores, cand_groups, self.nms_threshold)
        else:
            keep = torch.arange(len(cand_boxes), device=cand_boxes.device)
        # Every group keeps at least its best-scored box; draw one kept box per group uniformly.
        keep = keep[torch.argsort(cand_groups[keep], stable=True)]
        counts = torch.bincount(cand_groups[keep], minlength=num_boxes)
        starts = torch.cumsum(counts, 0) - counts
        u = torch.rand(num_boxes, generator=generator, device=cand_boxes.device)
        offsets = torch.minimum((u * counts).long(), counts - 1)
        picked = cand_boxes[keep[starts + offsets]]
        return [Boxes(picked[first[i] : first[i + 1]].to(b.device)) for i, b in enumerate(boxes)]
