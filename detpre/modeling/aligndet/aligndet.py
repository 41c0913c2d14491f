"""AlignDet's box-domain pretraining of a whole Faster R-CNN (backbone, FPN, RPN, box head)."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.roi_heads import Res5ROIHeads

from ..ssl import MLPProjection
from .box_contrast import box_id_contrast
from .box_domain import BoxDomainPretraining
from .proposal_ids import match_rois_to_ids

__all__ = ["AlignDet", "roi_box_features"]


def roi_box_features(roi_heads, features, boxes):
    """
    The box head's feature of each RoI, as the RoI heads compute it before their predictor.

    Args:
        roi_heads (ROIHeads): a ``StandardROIHeads`` (pooler + box head, e.g. FPN 4conv1fc) or a
            ``Res5ROIHeads`` (pooler + res5, then the spatial mean, as Detectron2 does).
        features (dict[str, Tensor]): backbone outputs.
        boxes (list[Boxes]): RoIs per image, in input pixels.

    Returns:
        Tensor: (sum R_i, C) features, C = 1024 for the 4conv1fc head, 2048 for res5.
    """
    if isinstance(roi_heads, Res5ROIHeads):
        x = roi_heads._shared_roi_transform([features[f] for f in roi_heads.in_features], boxes)
        return x.mean(dim=[2, 3])
    x = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], boxes)
    return roi_heads.box_head(x)


@META_ARCH_REGISTRY.register()
class AlignDet(BoxDomainPretraining, GeneralizedRCNN):
    """
    AlignDet (Li et al., "AlignDet: Aligning Pre-training and Fine-tuning in Object Detection",
    ICCV 2023), box-domain stage, for Detectron2's Faster R-CNN: R50-FPN with RPN and
    ``StandardROIHeads`` (4conv1fc box head) or R50-C4 with ``Res5ROIHeads``, built by
    ``GeneralizedRCNN`` from the same config, plus an EMA target copy ``momentum.*``.

    Per batch, two views of each image carry its unsupervised proposals with one id each:

    * the online network sees view 1: the RPN trains on the proposals as ground truth; the RoIs
      (RPN proposals plus the proposal boxes) matched to a proposal at IoU >= ``match_iou`` go
      through the box head; the classifier is replaced by a projector ``ssl_head.projector``
      (box feature -> ALIGNDET.PROJ_HIDDEN_DIM -> ALIGNDET.PROJ_DIM) and
      ``roi_heads.box_predictor.bbox_pred`` (class-agnostic) regresses
      the matched proposal box with an L1 loss;
    * the target network sees view 2 the same way, without gradient;
    * InfoNCE (ALIGNDET.TEMPERATURE) between online and target RoI embeddings of the same id, the RoIs
      of every other id in both views being negatives (:func:`box_id_contrast`).

    The image-domain backbone (``MODEL.WEIGHTS``) is frozen by default. The export is what the
    release's ``extract_detector_weights.py`` transfers (backbone, FPN, RPN, box head), under
    ``GeneralizedRCNN``'s names; ``bbox_pred`` only with ALIGNDET.EXPORT_BOX_REGRESSOR.
    """

    method = "aligndet"
    teacher_parts = ("backbone", "proposal_generator", "roi_heads", "ssl_head")
    box_regressor_prefix = "roi_heads.box_predictor.bbox_pred."

    @configurable
    def __init__(self, *, box_domain, match_iou, rois_per_image, **kwargs):
        """
        Args:
            box_domain (dict): the arguments of :meth:`BoxDomainPretraining.setup_box_domain`
                (projector: box feature -> embedding, temperature,
                freeze_backbone, loss weights).
            match_iou (float): IoU for a RoI to take a proposal's id.
            rois_per_image (int): at most this many matched RoIs per image.
            kwargs: the arguments of ``GeneralizedRCNN`` (backbone, proposal_generator,
                roi_heads, pixel_mean, pixel_std, ...).
        """
        super().__init__(**kwargs)
        predictor = self.roi_heads.box_predictor
        if predictor.bbox_pred.out_features != 4:
            raise ValueError(
                "AlignDet regresses proposal boxes class-agnostically: set "
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True in the pretraining config"
            )
        # The classifier is replaced by the projector: removed, so it is neither trained nor
        # exported (fine-tuning initialises its own).
        predictor.cls_score = None
        self.match_iou = match_iou
        self.rois_per_image = rois_per_image
        self.setup_box_domain(**box_domain)

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise ValueError(
                "AlignDet pretrains boxes only: set MODEL.MASK_ON and KEYPOINT_ON False"
            )
        if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
            raise ValueError(
                "AlignDet regresses proposal boxes class-agnostically: set "
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True in the pretraining config"
            )
        ret = GeneralizedRCNN.from_config(cfg)
        in_dim = ret["roi_heads"].box_predictor.bbox_pred.in_features
        projector = MLPProjection(
            in_dim=in_dim,
            hidden_dim=cfg.ALIGNDET.PROJ_HIDDEN_DIM or in_dim,
            out_dim=cfg.ALIGNDET.PROJ_DIM,
        )
        ret.update(
            box_domain=dict(cls.box_domain_config(cfg), projector=projector),
            match_iou=cfg.ALIGNDET.MATCH_IOU,
            rois_per_image=cfg.ALIGNDET.ROIS_PER_IMAGE,
        )
        return ret

    def branch(self, net, views, targets):
        """
        One network on one view: backbone, RPN (trained on the proposals), RoI matching, box
        head, projector and box regression.

        Args:
            net (nn.Module): ``self`` (online) or ``self.momentum`` (target).
            views (list[dict]): the view dicts ("image").
            targets (list[Instances]): ``gt_boxes``, ``gt_ids`` per image.

        Returns:
            dict: ``rois`` (list[Instances]), ``embeddings`` (R, D), ``deltas`` (R, 4),
            ``rpn_losses`` (dict).
        """
        images = self.preprocess_image(views)
        features = net.backbone(images.tensor)
        proposals, rpn_losses = net.proposal_generator(images, features, targets)
        rois = match_rois_to_ids(proposals, targets, self.match_iou, self.rois_per_image)
        x = roi_box_features(net.roi_heads, features, [r.proposal_boxes for r in rois])
        return {
            "rois": rois,
            "embeddings": net.ssl_head["projector"](x),
            "deltas": net.roi_heads.box_predictor.bbox_pred(x),
            "rpn_losses": rpn_losses,
        }

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): see :meth:`split_box_views`.

        Returns:
            dict[str, Tensor]: in training, ``loss_rpn_cls``, ``loss_rpn_loc``,
            ``loss_aligndet_contrast``, ``loss_aligndet_box_reg``. In eval mode, the online
            embeddings of view 1's proposal boxes, ``{"embeddings": (sum N_i, D), "ids"}``,
            without any state change.
        """
        views1, targets1, views2, targets2 = self.split_box_views(batched_inputs)
        if not self.training:
            images = self.preprocess_image(views1)
            features = self.backbone(images.tensor)
            x = roi_box_features(self.roi_heads, features, [t.gt_boxes for t in targets1])
            ids = torch.cat([t.gt_ids for t in targets1])
            return {"embeddings": self.ssl_head["projector"](x), "ids": ids}

        online = self.branch(self, views1, targets1)
        with torch.no_grad():
            target = self.branch(self.momentum, views2, targets2)
        ids1 = torch.cat([r.gt_ids for r in online["rois"]])
        ids2 = torch.cat([r.gt_ids for r in target["rois"]])
        loss_contrast, acc = box_id_contrast(
            online["embeddings"], ids1, target["embeddings"], ids2, self.temperature
        )
        rois = online["rois"]
        box2box = self.roi_heads.box_predictor.box2box_transform
        gt_deltas = box2box.get_deltas(
            torch.cat([r.proposal_boxes.tensor for r in rois]),
            torch.cat([r.gt_boxes.tensor for r in rois]),
        )
        loss_box = (online["deltas"] - gt_deltas).abs().sum() / max(1, len(gt_deltas))
        self.put_metrics(
            console={"acc": acc},
            others={
                "rois_per_image": len(ids1) / max(1, len(rois)),
                "ids_per_image": torch.unique(ids1).numel() / max(1, len(rois)),
            },
        )
        losses = dict(online["rpn_losses"])
        losses[self.loss_name("contrast")] = self.contrast_weight * loss_contrast
        losses[self.loss_name("box_reg")] = self.box_reg_weight * loss_box
        return losses
