"""AlignDet's box-domain pretraining of a whole RetinaNet (backbone, FPN, head subnets, box branch)."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes, pairwise_iou
from torch import nn

from .box_contrast import box_id_contrast
from .box_domain import BoxDomainPretraining

__all__ = ["AlignDetRetinaNet"]


@META_ARCH_REGISTRY.register()
class AlignDetRetinaNet(BoxDomainPretraining, RetinaNet):
    """
    AlignDet (Li et al., "AlignDet: Aligning Pre-training and Fine-tuning in Object Detection",
    ICCV 2023), box-domain stage, for Detectron2's ``RetinaNet`` (R50-FPN), as the release's
    ``SelfSupRetinaHead``: the classification convolution is replaced by a projector
    (1x1 conv - ReLU - 1x1 conv to one embedding per anchor, ``ssl_head.projector``) on the
    classification subnet's features; anchors matched to a proposal by RetinaNet's own anchor
    matcher take its id; InfoNCE between online (view 1) and EMA target (view 2) anchor embeddings
    of the same id, anchors of other ids in both views negatives; the box branch
    (``head.bbox_subnet``, ``head.bbox_pred``) regresses the matched proposal with an L1 loss.
    As the release's sampler (2048 per image, positive fraction 1), each image's matched anchors
    (at most ``anchors_per_image``) are topped up to ``anchors_per_image`` with background
    anchors (matcher label 0), which serve as negatives of every query in both views. The
    release's head pairs labels (image-major) with embeddings (level-major) in different orders
    at 2 images per GPU; that is not reproduced: each anchor keeps its own label.
    The exported weights are ``RetinaNet``'s but ``head.cls_score`` and (as the release's
    ``extract_detector_weights.py``, unless ALIGNDET.EXPORT_BOX_REGRESSOR) ``head.bbox_pred``.
    """

    method = "aligndet"
    teacher_parts = ("backbone", "head", "ssl_head")
    box_regressor_prefix = "head.bbox_pred."

    @configurable
    def __init__(self, *, box_domain, anchors_per_image, background_negatives=True, **kwargs):
        """
        Args:
            box_domain (dict): the arguments of :meth:`BoxDomainPretraining.setup_box_domain`
                (projector: (N, C, H, W) -> (N, A * D, H, W) anchor
                embeddings, temperature, freeze_backbone, loss weights).
            anchors_per_image (int): anchors sampled per image: the matched ones first (at most
                this many, random), then background ones when ``background_negatives``.
            background_negatives (bool): top the sample up with background anchors, negatives
                of the contrast.
            kwargs: the arguments of ``RetinaNet``.
        """
        super().__init__(**kwargs)
        # Replaced by the projector: neither trained nor exported.
        self.head.cls_score = None
        self.anchors_per_image = anchors_per_image
        self.background_negatives = background_negatives
        self.setup_box_domain(**box_domain)

    @classmethod
    def from_config(cls, cfg):
        ret = RetinaNet.from_config(cfg)
        channels = ret["head"].bbox_subnet[0].in_channels
        num_anchors = ret["anchor_generator"].num_cell_anchors[0]
        projector = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_anchors * cfg.ALIGNDET.PROJ_DIM, 1),
        )
        ret.update(
            box_domain=dict(cls.box_domain_config(cfg), projector=projector),
            anchors_per_image=cfg.ALIGNDET.ROIS_PER_IMAGE,
            background_negatives=cfg.ALIGNDET.BACKGROUND_NEGATIVES,
        )
        return ret

    def _sample(self, indices, num):
        """At most ``num`` of ``indices``, drawn at random (torch's generator)."""
        if indices.numel() <= num:
            return indices
        return indices[torch.randperm(indices.numel(), device=indices.device)[:num]]

    @torch.no_grad()
    def match_anchors(self, anchors: Boxes, targets):
        """
        Args:
            anchors (Boxes): (R, 4) all anchors of the batch's padded size.
            targets (list[Instances]): ``gt_boxes``, ``gt_ids`` per image.

        Returns:
            list[tuple[Tensor, Tensor, Tensor, Tensor]]: per image, the indices of the anchors
            matched (label 1 of the anchor matcher; at most ``anchors_per_image``), their ids,
            their proposal boxes (K, 4), and the indices of the background anchors sampled
            (label 0; ``anchors_per_image - K`` of them, none without ``background_negatives``).
        """
        out = []
        for t in targets:
            if len(t) == 0:
                matched = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
                labels = torch.zeros_like(matched)
            else:
                matched, labels = self.anchor_matcher(pairwise_iou(t.gt_boxes, anchors))
            keep = self._sample(torch.nonzero(labels == 1).squeeze(1), self.anchors_per_image)
            background = keep[:0]
            if self.background_negatives:
                num = self.anchors_per_image - keep.numel()
                background = self._sample(torch.nonzero(labels == 0).squeeze(1), num)
            if len(t) == 0:
                ids, boxes = keep, anchors.tensor[:0]
            else:
                ids, boxes = t.gt_ids[matched[keep]], t.gt_boxes.tensor[matched[keep]]
            out.append((keep, ids, boxes, background))
        return out

    def branch(self, net, views, targets):
        """
        Returns:
            dict: ``ids`` (K,), ``embeddings`` (K, D), ``deltas`` (K, 4) and ``gt_deltas``
            (K, 4) of the matched anchors of all images, and ``background`` (B, D), the
            embeddings of the sampled background anchors.
        """
        images = self.preprocess_image(views)
        features = net.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        anchors = Boxes.cat(self.anchor_generator(features))
        dim = (
            self.ssl_head["projector"][-1].out_channels // self.anchor_generator.num_cell_anchors[0]
        )
        emb = [net.ssl_head["projector"](net.head.cls_subnet(f)) for f in features]
        deltas = [net.head.bbox_pred(net.head.bbox_subnet(f)) for f in features]
        emb = torch.cat([permute_to_N_HWA_K(x, dim) for x in emb], dim=1)
        deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in deltas], dim=1)
        ids, out_emb, out_deltas, gt_deltas, background = [], [], [], [], []
        for i, (keep, ids_i, boxes_i, bg) in enumerate(self.match_anchors(anchors, targets)):
            ids.append(ids_i)
            background.append(emb[i, bg])
            out_emb.append(emb[i, keep])
            out_deltas.append(deltas[i, keep])
            gt_deltas.append(self.box2box_transform.get_deltas(anchors.tensor[keep], boxes_i))
        cat = torch.cat
        return {
            "ids": cat(ids),
            "embeddings": cat(out_emb),
            "deltas": cat(out_deltas),
            "gt_deltas": cat(gt_deltas),
            "background": cat(background),
        }

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): see :meth:`split_box_views`.

        Returns:
            dict[str, Tensor]: ``loss_aligndet_contrast`` and ``loss_aligndet_box_reg``.
        """
        if not self.training:
            raise NotImplementedError("AlignDetRetinaNet is a pretraining model: train mode only")
        views1, targets1, views2, targets2 = self.split_box_views(batched_inputs)
        online = self.branch(self, views1, targets1)
        with torch.no_grad():
            target = self.branch(self.momentum, views2, targets2)
        loss_contrast, acc = box_id_contrast(
            online["embeddings"], online["ids"], target["embeddings"], target["ids"],
            self.temperature, negatives=torch.cat([online["background"], target["background"]]),
        )  # fmt: skip
        num = max(1, len(online["ids"]))
        loss_box = (online["deltas"] - online["gt_deltas"]).abs().sum() / num
        self.put_metrics(
            console={"acc": acc},
            others={
                "anchors_per_image": len(online["ids"]) / len(views1),
                "background_per_image": len(online["background"]) / len(views1),
            },
        )
        return {
            self.loss_name("contrast"): self.contrast_weight * loss_contrast,
            self.loss_name("box_reg"): self.box_reg_weight * loss_box,
        }
