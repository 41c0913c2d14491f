"""InsLoc: instance-level contrast on RoI features of pasted foregrounds."""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes
from torch import nn

from ..meta_arch.encoder import build_detector_trunk
from ..meta_arch.momentum_contrast import MomentumContrast
from ..ssl import MLPProjection
from .box_jitter import AnchorBoxJitter

__all__ = ["InsLoc", "release_init_"]


def release_init_(backbone, roi_heads, ssl_head):
    """
    Initialise, in place, the layers whose initialisation differs between Detectron2 and the
    official release (limbo0000/InstanceLoc, ``InsLocFPN.init_weights``): the FPN's lateral and
    output convs (mmdet ``FPN``: Xavier-uniform, gain 1), the box head's fc and the projection's
    hidden fc (``ConvFCBBoxInsClsHead.shared_fcs``: Xavier-uniform) and the projection's output
    fc (``fc_cls``: normal, std 0.01); biases 0. The ResNet and the head's convs already match
    (Kaiming-normal, fan-out; BN weight 1, bias 0).

    Args:
        backbone (Backbone): an FPN (its ``fpn_*`` convs are set) or a plain ResNet (unchanged).
        roi_heads (nn.ModuleDict): with ``box_head`` (its ``fc*`` are set) or ``res5``.
        ssl_head (MLPProjection): ``fc1`` Xavier-uniform, ``fc2`` normal 0.01.
    """
    layers = []
    if isinstance(backbone, FPN):
        layers += [m for n, m in backbone.named_children() if n.startswith("fpn_")]
    if "box_head" in roi_heads:
        layers += list(getattr(roi_heads["box_head"], "fcs", []))
    layers.append(ssl_head.fc1)
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    nn.init.normal_(ssl_head.fc2.weight, std=0.01)
    nn.init.zeros_(ssl_head.fc2.bias)


@META_ARCH_REGISTRY.register()
class InsLoc(MomentumContrast):
    """
    InsLoc (Yang et al., "Instance Localization for Self-supervised Detection Pretraining",
    CVPR 2021). A foreground crop is pasted at a random place and scale onto two backgrounds;
    the query and key embeddings are the RoI features of the pasted box in each view, contrasted
    with MoCo-v2 (momentum key encoder, queue of negatives, InfoNCE, shuffle-BN):

    * R50-C4: RoIAlign (2 x INSLOC.POOLER_RESOLUTION) of the box on res4, ``roi_heads.res5``,
      global average pool, MLP projection; one queue, ``loss_insloc``;
    * R50-FPN: the box RoIAligned on every level P2-P5 separately (no level assignment), the
      shared ``roi_heads.box_head``, MLP projection; one queue and loss ``loss_insloc_<level>``
      per level, weight 1 (P5 only when INSLOC.PER_LEVEL_CONTRAST is False).

    Box augmentation (INSLOC.BOX_AUG) replaces the query box by a random overlapping anchor
    (only on the coarsest level for FPN); the key always pools the true box. With
    INSLOC.WHOLE_IMAGE_ROI the whole view is pooled instead of the pasted box.
    """

    method = "insloc"

    @configurable
    def __init__(
        self,
        *,
        pooler_resolution,
        pooler_sampling_ratio=0,
        box_jitter=None,
        whole_image_roi=False,
        **kwargs,
    ):
        """
        Args:
            pooler_resolution (int): RoIAlign output side (C4 pools twice this before res5).
            pooler_sampling_ratio (int): RoIAlign sampling ratio.
            box_jitter (AnchorBoxJitter or None): query box augmentation; None disables it.
            whole_image_roi (bool): pool the whole view instead of its box.
            kwargs: arguments of :class:`MomentumContrast`.
        """
        super().__init__(**kwargs)
        self.box_jitter = box_jitter
        self.whole_image_roi = whole_image_roi
        shapes = self.backbone.output_shape()
        if self.is_fpn:
            in_features = {level: level for level in self.levels}
            output_size = pooler_resolution
        else:
            in_features = {level: "res4" for level in self.levels}
            output_size = 2 * pooler_resolution
        self.in_features = in_features
        self.poolers = nn.ModuleDict(
            {
                level: ROIPooler(
                    output_size=output_size,
                    scales=(1.0 / shapes[feature].stride,),
                    sampling_ratio=pooler_sampling_ratio,
                    pooler_type="ROIAlignV2",
                )
                for level, feature in in_features.items()
            }
        )
        # The query box is jittered on this level only (P5 for FPN, the only level for C4).
        self.jitter_level = self.levels[-1]

    @property
    def has_unused_parameters(self):
        """With FPN contrast on fewer levels than the FPN has, the other levels' convs idle."""
        return self.is_fpn and len(self.levels) < len(self.backbone.in_features)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        trunk = build_detector_trunk(cfg)
        if trunk["kind"] == "FPN":
            levels = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
            if not cfg.INSLOC.PER_LEVEL_CONTRAST:
                levels = levels[-1:]
            if cfg.INSLOC.POOLER_RESOLUTION != cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION:
                raise ValueError(
                    f"INSLOC.POOLER_RESOLUTION {cfg.INSLOC.POOLER_RESOLUTION} must equal "
                    f"MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION {cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION}"
                    " (the box head's fc input is sized for it)"
                )
        else:
            levels = ["res5"]
        ssl_head = MLPProjection(cfg, trunk["out_dim"])
        if cfg.INSLOC.RELEASE_INIT:
            release_init_(trunk["backbone"], trunk["roi_heads"], ssl_head)
        ret.update(
            backbone=trunk["backbone"],
            roi_heads=trunk["roi_heads"],
            ssl_head=ssl_head,
            levels=levels,
            level_suffix=trunk["kind"] == "FPN",
            pooler_resolution=cfg.INSLOC.POOLER_RESOLUTION,
            pooler_sampling_ratio=cfg.INSLOC.POOLER_SAMPLING_RATIO,
            box_jitter=AnchorBoxJitter(cfg) if cfg.INSLOC.BOX_AUG else None,
            whole_image_roi=cfg.INSLOC.WHOLE_IMAGE_ROI,
        )
        return ret

    def embed(self, net, images, boxes, is_query):
        """See :meth:`MomentumContrast.embed`; ``boxes`` may be None with WHOLE_IMAGE_ROI."""
        if self.whole_image_roi:
            boxes = torch.tensor(
                [[0.0, 0.0, w, h] for h, w in images.image_sizes], device=images.tensor.device
            )
        elif boxes is None:
            raise ValueError("InsLoc needs 'boxes' in every view (or INSLOC.WHOLE_IMAGE_ROI True)")
        true_boxes = [Boxes(b[None]) for b in boxes]
        jitter = self.box_jitter is not None and is_query
        jittered = self.box_jitter(true_boxes, images.image_sizes) if jitter else true_boxes

        features = net.backbone(images.tensor)
        pooled = [
            self.poolers[level](
                [features[self.in_features[level]]],
                jittered if level == self.jitter_level else true_boxes,
            )
            for level in self.levels
        ]
        x = torch.cat(pooled, dim=0)
        if self.is_fpn:
            x = net.roi_heads.box_head(x)
        else:
            x = net.roi_heads.res5(x).mean(dim=(2, 3))
        z = F.normalize(net.ssl_head(x), dim=1)
        return dict(zip(self.levels, z.split(len(true_boxes))))
