"""
What the box-domain pretraining meta-architectures (AlignDet for R-CNN and for RetinaNet) share:
the EMA target copy, the frozen image-domain backbone, and the two views of the inputs.
"""

from typing import Dict, List

import torch
from detectron2.modeling.backbone import FPN

from ...views import IMAGE, INSTANCES
from ..meta_arch.base import PretrainingMetaArch
from .proposal_ids import batch_unique_ids

__all__ = ["BoxDomainPretraining", "frozen_backbone_path"]


def frozen_backbone_path(backbone):
    """
    The part of ``backbone`` that holds the image-domain pretraining: the bottom-up network of an
    FPN (the FPN itself is box-domain), the whole backbone otherwise (R50-C4: stem and res2-res4).

    Returns:
        str: a submodule path relative to the meta-architecture.
    """
    return "backbone.bottom_up" if isinstance(backbone, FPN) else "backbone"


class BoxDomainPretraining(PretrainingMetaArch):
    """
    The base of a pretraining Detectron2 detector subclass (``class AlignDet(BoxDomainPretraining,
    GeneralizedRCNN)``, the detector supplying ``__init__``, normalisation and ``device``): call
    :meth:`setup_box_domain` at the end of ``__init__``. It adds the projector
    ``ssl_head.projector``, the EMA target network ``momentum.*`` of :attr:`teacher_parts` (moved
    by :meth:`momentum_update`, which the trainer's ``MomentumScheduleHook`` calls after each
    step), freezes the image-domain backbone (no gradient, batch norms in eval mode in both
    copies), and turns ``{"views": [v1, v2]}`` inputs into per-view image batches and targets.
    """

    view_keys = (IMAGE, INSTANCES)

    def setup_box_domain(
        self,
        *,
        projector,
        temperature,
        freeze_backbone,
        contrast_weight=1.0,
        box_reg_weight=1.0,
        allow_random_frozen_backbone=False,
        export_box_regressor=False,
    ):
        """
        Args:
            projector (nn.Module): detector feature -> contrastive embedding.
            temperature (float): InfoNCE temperature.
            freeze_backbone (bool): freeze the image-domain backbone (see
                :func:`frozen_backbone_path`).
            contrast_weight, box_reg_weight (float): loss weights.
            allow_random_frozen_backbone (bool): let :meth:`check_initialisation` accept a
                frozen backbone with no weights to load.
            export_box_regressor (bool): hand the box regressor (:attr:`box_regressor_prefix`)
                over to fine-tuning; the release does not.
        """
        self.ssl_head = torch.nn.ModuleDict({"projector": projector})
        self.temperature = temperature
        self.contrast_weight = contrast_weight
        self.box_reg_weight = box_reg_weight
        frozen_path = frozen_backbone_path(self.backbone) if freeze_backbone else None
        self.frozen_path = frozen_path
        self.allow_random_frozen_backbone = allow_random_frozen_backbone
        self.export_box_regressor = export_box_regressor
        if frozen_path is not None:
            self.get_submodule(frozen_path).requires_grad_(False)
        # Copied after freezing: the copy's parameters take no gradient either way.
        self.setup_pretraining()
        self.train(self.training)

    @staticmethod
    def box_domain_config(cfg):
        """The :meth:`setup_box_domain` arguments read from ``cfg.ALIGNDET`` (all but the
        projector)."""
        node = cfg.ALIGNDET
        return {
            "temperature": node.TEMPERATURE,
            "freeze_backbone": node.FREEZE_BACKBONE,
            "contrast_weight": node.CONTRAST_WEIGHT,
            "box_reg_weight": node.BOX_REG_WEIGHT,
            "allow_random_frozen_backbone": node.ALLOW_RANDOM_FROZEN_BACKBONE,
            "export_box_regressor": node.EXPORT_BOX_REGRESSOR,
        }

    @property
    def export_excluded_prefixes(self):
        """The box regressor, unless ALIGNDET.EXPORT_BOX_REGRESSOR: the release's
        ``extract_detector_weights.py`` drops ``fc_reg`` / ``retina_reg``."""
        return () if self.export_box_regressor else (self.box_regressor_prefix,)

    def check_initialisation(self, weights):
        """
        Called by the pretraining trainer before a run that does not resume: refuse to freeze a
        backbone that nothing initialises.

        Args:
            weights (str): the run's ``MODEL.WEIGHTS``.
        """
        if self.frozen_path is not None and not weights and not self.allow_random_frozen_backbone:
            raise ValueError(
                "ALIGNDET.FREEZE_BACKBONE is True but MODEL.WEIGHTS is empty: the frozen "
                f"{self.frozen_path} would stay at its random initialisation for the whole run. "
                "Set MODEL.WEIGHTS to an image-domain checkpoint (an InsLoc / MoCo-v2 "
                "model_final_d2.pth, a converted release), or ALIGNDET.FREEZE_BACKBONE False, or "
                "ALIGNDET.ALLOW_RANDOM_FROZEN_BACKBONE True if a random frozen backbone is meant."
            )

    def train(self, mode=True):
        super().train(mode)
        if getattr(self, "frozen_path", None) is not None:
            self.get_submodule(self.frozen_path).eval()
            if hasattr(self, "momentum"):
                self.momentum.get_submodule(self.frozen_path).eval()
        return self

    def split_box_views(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): per image ``{"views": [v1, v2]}``, each view
                ``{"image": (3, H, W) uint8, "instances": Instances(gt_boxes, gt_ids)}``.

        Returns:
            tuple: ``(views1, targets1, views2, targets2)``: the view dicts of each side and
            their Instances on the model's device with ids unique in the batch.
        """
        views1, views2 = self.split_views(batched_inputs)
        for i, v in enumerate(views1 + views2):
            if not v[INSTANCES].has("gt_ids"):
                raise ValueError(
                    f"Input {i % len(views1)}: each view needs 'instances' with gt_ids; check "
                    f"SSL.MAPPER ({self.mapper_name})"
                )
        targets1 = batch_unique_ids([v[INSTANCES].to(self.device) for v in views1])
        targets2 = batch_unique_ids([v[INSTANCES].to(self.device) for v in views2])
        return views1, targets1, views2, targets2
