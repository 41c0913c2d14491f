"""
Backbones of semantic-segmentation transfer: mmseg's dilated ResNet (FCN R50-D8 / D16) from
Detectron2's DeepLab ResNet, and a ViT whose last-layer patch tokens are the feature (Segmenter).
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import ResNet
from detectron2.projects.deeplab.resnet import build_resnet_deeplab_backbone

from ..backbone.vit import build_vit

__all__ = [
    "DilatedResNet",
    "ViTTokens",
    "build_resnet_dilated_backbone",
    "build_vit_tokens_backbone",
]


class DilatedResNet(ResNet):
    """
    Detectron2's ResNet whose inputs are padded to a multiple of its output stride, so that the
    head's logits upsampled by that stride cover the padded image exactly.
    """

    @property
    def size_divisibility(self) -> int:
        return max(s.stride for s in self.output_shape().values())


def contract_first_dilation(stage):
    """
    mmseg's ``contract_dilation``: the first block of a dilated stage uses half its dilation.

    Args:
        stage (nn.Sequential): Detectron2 ``BottleneckBlock``s built with one dilation.
    """
    conv2 = stage[0].conv2
    dilation = conv2.dilation[0]
    if dilation > 1:
        conv2.dilation = conv2.padding = (dilation // 2, dilation // 2)


@BACKBONE_REGISTRY.register()
def build_resnet_dilated_backbone(cfg, input_shape):
    """
    The dilated ResNet of mmseg's FCN (Long et al., Fully Convolutional Networks for Semantic
    Segmentation, CVPR 2015; Chen et al., DeepLab, TPAMI 2017): Detectron2's DeepLab ResNet
    (``MODEL.RESNETS.RES4_DILATION`` / ``RES5_DILATION``: 2 / 4 for output stride 8, 1 / 2 for
    16; ``STEM_TYPE`` "basic" for torchvision-style weights), with mmseg's contracted first
    dilation (``SEMSEG.CONTRACT_DILATION``). Its keys are a plain ResNet's (``backbone.stem``,
    ``backbone.res2`` ... ``backbone.res5``).

    Args:
        cfg (CfgNode): a config with Detectron2's DeepLab keys (``add_semseg_config``).
        input_shape (ShapeSpec): input channels.

    Returns:
        DilatedResNet
    """
    if cfg.SEMSEG.FREEZE_BACKBONE:
        raise ValueError(
            "SEMSEG.FREEZE_BACKBONE is for ViT backbones; freeze a ResNet with "
            "MODEL.BACKBONE.FREEZE_AT 5 (its BatchNorms become FrozenBatchNorm)"
        )
    resnet = build_resnet_deeplab_backbone(cfg, input_shape)
    if cfg.SEMSEG.CONTRACT_DILATION:
        for name in ("res4", "res5"):
            if hasattr(resnet, name):
                contract_first_dilation(getattr(resnet, name))
    stages = [getattr(resnet, name) for name in resnet.stage_names]
    dilated = DilatedResNet(resnet.stem, stages, out_features=resnet._out_features)
    return dilated.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


class ViTTokens(Backbone):
    """
    Detectron2's plain ViT held as ``net`` (so its keys are ViTDet's ``backbone.net.*``), giving
    its last-layer patch tokens as a (N, C, H / 16, W / 16) map: the encoder of Segmenter's linear
    decoder (Strudel et al., Segmenter: Transformer for Semantic Segmentation, ICCV 2021).
    With ``freeze`` its parameters take no gradient and it stays in eval mode (no drop path):
    the linear probe.
    """

    def __init__(self, net, *, freeze=False):
        """
        Args:
            net (ViT): Detectron2's ViT.
            freeze (bool): keep it fixed.
        """
        super().__init__()
        self.net = net
        self.freeze = freeze
        if freeze:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode=True):
        super().train(mode)
        if self.freeze:
            self.net.eval()
        return self

    @property
    def size_divisibility(self) -> int:
        return self.net.patch_embed.proj.stride[0]

    def output_shape(self):
        return self.net.output_shape()

    def forward(self, x):
        """
        Args:
            x (Tensor): (N, 3, H, W) normalised images, H and W multiples of the patch size.

        Returns:
            dict[str, Tensor]: ``{MODEL.VIT.OUT_FEATURE: (N, C, H / P, W / P)}``.
        """
        return self.net(x)


@BACKBONE_REGISTRY.register()
def build_vit_tokens_backbone(cfg, input_shape=None):
    """
    :class:`ViTTokens` from ``MODEL.VIT.*``; ``SEMSEG.FREEZE_BACKBONE`` freezes it.

    Args:
        cfg (CfgNode): a config with ``MODEL.VIT`` and ``SEMSEG``.
        input_shape (ShapeSpec or None): input channels.

    Returns:
        ViTTokens
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    return ViTTokens(build_vit(cfg, input_shape), freeze=cfg.SEMSEG.FREEZE_BACKBONE)
