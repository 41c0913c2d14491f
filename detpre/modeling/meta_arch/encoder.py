"""
The detector trunk a pretraining meta-architecture trains and hands over, built by Detectron2's
own builders from Detectron2's ``MODEL.*`` keys, under ``GeneralizedRCNN``'s names.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone import FPN
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads, build_box_head
from torch import nn

__all__ = ["Res5TrunkExport", "build_detector_trunk", "build_res5_trunk"]


def build_detector_trunk(cfg):
    """
    Build ``backbone`` and the pretrained part of ``roi_heads`` exactly as ``GeneralizedRCNN``
    builds them from the same config, so their state-dict keys and shapes are Detectron2's:

    * R50-C4 (a backbone without FPN whose only output is ``res4``): ``roi_heads.res5`` from the
      ``_build_res5_block`` of ``MODEL.ROI_HEADS.NAME`` (a ``Res5ROIHeads`` subclass);
    * R50-FPN (an ``FPN`` backbone): ``roi_heads.box_head`` from ``build_box_head`` with the FPN
      channels and ``MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION``, as ``StandardROIHeads`` does.

    Proposal generator, box predictor and mask head are not built: pretraining does not train
    them, and fine-tuning initialises them.

    Args:
        cfg (CfgNode): a config with Detectron2's ``MODEL.*`` keys.

    Returns:
        dict: ``backbone`` (Backbone), ``roi_heads`` (nn.ModuleDict with ``res5`` or
        ``box_head``), ``kind`` ("C4" or "FPN") and ``out_dim`` (int, width of the head's pooled
        output: res5 channels for C4, the box head's output size for FPN).
    """
    backbone = build_backbone(cfg)
    if isinstance(backbone, FPN):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES {in_features} names {missing}, not among the FPN "
                f"outputs {sorted(shapes)}"
            )
        channels = {shapes[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"FPN levels {in_features} have different channels {channels}")
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        box_head = build_box_head(
            cfg, ShapeSpec(channels=channels.pop(), height=resolution, width=resolution)
        )
        roi_heads = nn.ModuleDict({"box_head": box_head})
        return {
            "backbone": backbone,
            "roi_heads": roi_heads,
            "kind": "FPN",
            "out_dim": box_head.output_shape.channels,
        }
    if list(backbone.output_shape()) != ["res4"]:
        raise ValueError(
            "A C4 pretraining trunk needs MODEL.RESNETS.OUT_FEATURES ['res4'] (res5 lives in "
            f"roi_heads), got backbone outputs {list(backbone.output_shape())}; use an FPN "
            "MODEL.BACKBONE.NAME for multi-level features"
        )
    head_cls = ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)
    if not (isinstance(head_cls, type) and issubclass(head_cls, Res5ROIHeads)):
        raise ValueError(
            f"MODEL.ROI_HEADS.NAME {cfg.MODEL.ROI_HEADS.NAME!r} is not a Res5ROIHeads subclass; "
            "a C4 trunk takes its res5 block from it"
        )
    res5, out_channels = head_cls._build_res5_block(cfg)
    return {
        "backbone": backbone,
        "roi_heads": nn.ModuleDict({"res5": res5}),
        "kind": "C4",
        "out_dim": out_channels,
    }


def build_res5_trunk(cfg, method):
    """
    :func:`build_detector_trunk` for methods that work on the last ResNet stage of either trunk:
    the bottom-up res5 of an FPN backbone (whose FPN and box head then take no gradient), or
    ``roi_heads.res5`` on C4.

    Args:
        cfg (CfgNode): a config with Detectron2's ``MODEL.*`` keys.
        method (str): the meta-architecture's name, for the error message.

    Returns:
        tuple: ``backbone`` (Backbone), ``roi_heads`` (nn.ModuleDict: empty for FPN, ``res5`` for
        C4) and the res5 channels (int).
    """
    trunk = build_detector_trunk(cfg)
    backbone = trunk["backbone"]
    if trunk["kind"] == "C4":
        return backbone, trunk["roi_heads"], trunk["out_dim"]
    shapes = backbone.bottom_up.output_shape()
    if "res5" not in shapes:
        raise ValueError(
            f"{method} with FPN works on the bottom-up res5: add 'res5' to "
            f"MODEL.RESNETS.OUT_FEATURES (got {sorted(shapes)})"
        )
    return backbone, nn.ModuleDict(), shapes["res5"].channels


class Res5TrunkExport:
    """
    What a method on :func:`build_res5_trunk` hands over, for a class with an ``is_fpn``
    attribute: on R50-FPN the pretext trains the bottom-up ResNet only, so the FPN layers take no
    gradient (DistributedDataParallel must look for unused parameters) and are left out of the
    export (fine-tuning initialises them, and its load report says so).
    """

    @property
    def has_unused_parameters(self):
        """On FPN the lateral and output convs take no gradient."""
        return self.is_fpn

    @property
    def export_excluded_prefixes(self):
        """Detectron2 keys held but not trained, left out of the export: the FPN on R50-FPN."""
        return ("backbone.fpn_",) if self.is_fpn else ()
