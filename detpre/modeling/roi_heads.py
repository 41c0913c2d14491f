"""ROI heads of the fine-tuning protocol used by self-supervised detection papers."""

from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    FastRCNNConvFCHead,
    Res5ROIHeads,
)


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """
    ``Res5ROIHeads`` with one extra normalisation layer after the res5 stage, as in the detection
    transfer protocol of MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020), followed by InsLoc and later SSL detection papers: with SyncBN the pooled
    res5 features are normalised before the box predictor, which matters when fine-tuning
    unsupervised features. The norm is ``MODEL.RESNETS.NORM`` and lives at ``roi_heads.res5.norm``,
    so every other ``roi_heads.res5.*`` key is unchanged and loads from pretraining outputs.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHeadExtraNorm(FastRCNNConvFCHead):
    """
    The 4conv1fc box head with one extra normalisation after the last fc and its ReLU, the
    R50-FPN fine-tuning head of InsLoc (Yang et al., "Instance Localization for Self-supervised
    Detection Pretraining", CVPR 2021; ``transfer/detection/train_net.py`` of its release): the
    norm is ``MODEL.ROI_BOX_HEAD.NORM`` over the fc width, applied to (N, C, 1, 1), and lives at
    ``roi_heads.box_head.fc_extra_norm``, the release's name; every other key is
    ``FastRCNNConvFCHead``'s, so pretrained ``conv1..4`` / ``fc1`` load unchanged.
    """

    @configurable
    def __init__(self, input_shape, *, conv_dims, fc_dims, conv_norm=""):
        """
        Args:
            input_shape, conv_dims, fc_dims, conv_norm: see ``FastRCNNConvFCHead``;
                ``fc_dims`` must be non-empty and ``conv_norm`` a norm (the extra norm's kind).
        """
        if not fc_dims or not conv_norm:
            raise ValueError(
                "FastRCNNConvFCHeadExtraNorm needs MODEL.ROI_BOX_HEAD.NUM_FC >= 1 and a "
                f"MODEL.ROI_BOX_HEAD.NORM (got {len(fc_dims)} fcs, norm {conv_norm!r})"
            )
        super().__init__(input_shape, conv_dims=conv_dims, fc_dims=fc_dims, conv_norm=conv_norm)
        # Registered last: nn.Sequential keeps it after the last fc and its ReLU.
        self.fc_extra_norm = get_norm(conv_norm, fc_dims[-1])

    def forward(self, x):
        """
        Args:
            x (Tensor): (N, C, H, W) pooled RoI features.

        Returns:
            Tensor: (N, FC_DIM).
        """
        for name, layer in self.named_children():
            if name == "fc_extra_norm":
                x = layer(x[:, :, None, None]).flatten(1)
            else:
                x = layer(x)
        return x
