"""
The views of AlignDet's box-domain pretraining (Li et al., ICCV 2023): two independently
augmented copies of a whole image (multi-scale resize, flip, one colour operation; no crop), and
the image's unsupervised proposals carried into both with one id each.
"""

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from ...views import IMAGE, INSTANCES
from ..build import PRETRAIN_MAPPER_REGISTRY
from ..transforms.one_color_op import RandomColorOp
from .base import PretextMapper

__all__ = ["BoxDomainMapper", "proposal_boxes"]


def proposal_boxes(dataset_dict, max_proposals=0):
    """
    Args:
        dataset_dict (dict): a Detectron2 dataset dict whose "annotations" are the proposals (any
            ``bbox_mode``).
        max_proposals (int): keep the first N; <= 0 keeps all.

    Returns:
        ndarray: (N, 4) float64 XYXY boxes in original pixels, those with positive width and
        height; row i is proposal id i in every view.
    """
    anns = [a for a in dataset_dict.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if max_proposals > 0:
        boxes = boxes[:max_proposals]
    return boxes


@PRETRAIN_MAPPER_REGISTRY.register()
class BoxDomainMapper(PretextMapper):
    """
    AlignDet's two views (Li et al., "AlignDet: Aligning Pre-training and Fine-tuning in Object
    Detection", ICCV 2023): each view, independently, resizes the image (shorter side drawn from
    ``min_sizes``, longer side at most ``max_size``), flips it with ``flip_prob`` and applies one
    colour operation of nine. The proposals (the dataset dict's "annotations", e.g. a
    ``tools/prepare_proposals.py`` json) follow the geometry; since nothing is cropped every
    proposal is in both views, as row i of both views' ``gt_boxes`` with ``gt_ids`` i.

    Output: ``{"file_name", "image_id", "views": [view1, view2]}``, each view
    ``{"image": uint8 (3, H, W), "instances": Instances(gt_boxes, gt_ids)}``; None (another
    image is drawn) for an unreadable image or one without proposals.
    """

    # get_pretrain_dicts keeps the dataset's "annotations" (the proposals) for this mapper.
    needs_annotations = True

    @configurable
    def __init__(
        self, *, image_format, min_sizes, max_size, flip_prob, color_magnitude, max_proposals=0
    ):
        """
        Args:
            image_format (str): INPUT.FORMAT.
            min_sizes (sequence[int]): shorter-side sizes, one drawn per view.
            max_size (int): the longer side's limit.
            flip_prob (float): probability of a horizontal flip per view.
            color_magnitude (int): colour magnitudes are drawn in [1, color_magnitude).
            max_proposals (int): proposals used per image (the first ones); <= 0 keeps all.
        """
        super().__init__(image_format=image_format)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"ALIGNDET.FLIP_PROB={flip_prob} is not a probability")
        self.flip = T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False)
        if not min_sizes or min(min_sizes) <= 0 or max_size <= 0:
            raise ValueError(
                f"ALIGNDET.MIN_SIZES {tuple(min_sizes)} and ALIGNDET.MAX_SIZE {max_size} must be "
                "positive"
            )
        self.resize = T.ResizeShortestEdge(tuple(min_sizes), max_size, sample_style="choice")
        self.color = RandomColorOp(color_magnitude)
        self.max_proposals = max_proposals
        self.num_without_proposals = 0

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        cls.check_train(is_train)
        return {
            "image_format": cfg.INPUT.FORMAT,
            "min_sizes": cfg.ALIGNDET.MIN_SIZES,
            "max_size": cfg.ALIGNDET.MAX_SIZE,
            "flip_prob": cfg.ALIGNDET.FLIP_PROB,
            "color_magnitude": cfg.ALIGNDET.COLOR_MAGNITUDE,
            "max_proposals": cfg.ALIGNDET.MAX_PROPOSALS,
        }

    def make_box_view(self, image, boxes):
        """
        Args:
            image (ndarray): (H, W, 3) uint8, the decoded image.
            boxes (ndarray): (N, 4) XYXY proposals in its pixels.

        Returns:
            dict: ``{"image": uint8 (3, H', W'), "instances": Instances(gt_boxes, gt_ids)}``.
        """
        aug = T.AugInput(image)
        tfms = T.AugmentationList([self.resize, self.flip, self.color])(aug)
        out = aug.image
        instances = Instances(out.shape[:2])
        instances.gt_boxes = Boxes(torch.as_tensor(tfms.apply_box(boxes), dtype=torch.float32))
        instances.gt_ids = torch.arange(len(boxes))
        tensor = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        return {IMAGE: tensor, INSTANCES: instances}

    def make_views(self, image, dataset_dict):
        boxes = proposal_boxes(dataset_dict, self.max_proposals)
        if len(boxes) == 0:
            self.num_without_proposals += 1
            return None
        image = image.decode()  # full size: the views are resized up to ALIGNDET.MAX_SIZE
        return [self.make_box_view(image, boxes) for _ in range(2)]
