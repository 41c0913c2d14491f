"""MoCo-v2: image-level momentum contrast on a detector trunk."""

import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ..meta_arch.encoder import Res5TrunkExport, build_res5_trunk
from ..meta_arch.momentum_contrast import MomentumContrast
from ..ssl import MLPProjection

__all__ = ["MoCoV2"]


@META_ARCH_REGISTRY.register()
class MoCoV2(Res5TrunkExport, MomentumContrast):
    """
    MoCo-v2 (Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020): two
    random crops of one image are the query and its positive key; the embedding is the global
    average pool of the last ResNet stage followed by the 2-layer MLP projection. One queue,
    ``loss_moco``.

    * R50-C4: res4 from ``backbone``, then ``roi_heads.res5`` on the whole feature map, so the
      res5 weights are pretrained under the name the C4 detector loads them from;
    * R50-FPN: the bottom-up res5 output (``backbone.bottom_up``), the same ResNet MoCo-v2
      pretrains for classification. The FPN layers (lateral and output convs) are held at
      their initialisation but take no gradient, so they are not exported
      (:attr:`export_excluded_prefixes`): fine-tuning initialises them itself, and its load
      report counts them as such. No RoI head is built. Under DistributedDataParallel this
      needs ``find_unused_parameters=True``.

    Views of a batch are expected to have one size (MoCo's square crops): the pool averages the
    padded feature map.
    """

    method = "moco"

    @configurable
    def __init__(self, **kwargs):
        """
        Args:
            kwargs: arguments of :class:`MomentumContrast`.
        """
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        backbone, roi_heads, in_dim = build_res5_trunk(cfg, "MoCoV2")
        ret.update(
            backbone=backbone,
            roi_heads=roi_heads,
            ssl_head=MLPProjection(cfg, in_dim),
            levels=["res5"],
        )
        return ret

    def embed(self, net, images, boxes, is_query):
        """See :meth:`MomentumContrast.embed`; ``boxes`` are not used."""
        if self.is_fpn:
            x = net.backbone.bottom_up(images.tensor)["res5"]
        else:
            x = net.roi_heads.res5(net.backbone(images.tensor)["res4"])
        z = F.normalize(net.ssl_head(x.mean(dim=(2, 3))), dim=1)
        return {"res5": z}
