"""ROI heads of the fine-tuning protocol used by self-supervised detection papers."""

from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


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
