"""SlotCon: semantic grouping of pixels into slots, and contrast of the slots across views."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.resnet import BottleneckBlock
from torch import nn

from ...views import CROP_BOX, FLIPPED, IMAGE
from ..meta_arch.base import PretrainingMetaArch
from ..meta_arch.encoder import Res5TrunkExport, build_res5_trunk
from .centering import Centering
from .conv_mlp import ConvMLP
from .overlap_align import align_to_overlap, overlap_boxes
from .semantic_grouping import SemanticGrouping
from .slot_losses import grouping_loss, slot_contrast_loss, valid_slots

__all__ = ["SlotCon", "zero_init_residual_"]


def zero_init_residual_(*modules):
    """
    Set the weight of the last norm of every bottleneck block to 0, so that each residual branch
    starts at zero (Goyal et al., "Accurate, Large Minibatch SGD", Sec. 5.1): SlotCon's release
    does so in its ``models/resnet.py`` (``bn3.weight``).

    Args:
        modules (nn.Module): searched for Detectron2 ``BottleneckBlock``s (``conv3.norm``).
    """
    for module in modules:
        for block in module.modules():
            if isinstance(block, BottleneckBlock) and block.conv3.norm is not None:
                nn.init.zeros_(block.conv3.norm.weight)


@META_ARCH_REGISTRY.register()
class SlotCon(Res5TrunkExport, PretrainingMetaArch):
    """
    SlotCon (Wen et al., "Self-Supervised Visual Representation Learning with Semantic Grouping",
    NeurIPS 2022) over a Detectron2 detector trunk. The student is the network handed over
    (``backbone``, ``roi_heads.res5`` for C4) plus ``ssl_head``: a 1x1-conv projector of the
    res5 pixels, K prototypes (``ssl_head.grouping``), a slot predictor and the teacher centre.
    The EMA teacher (``momentum.*``) copies the trunk, projector and prototypes; it is moved by
    :meth:`momentum_update` after each optimizer step (the trainer's ``MomentumScheduleHook``) and
    is what the fine-tuning checkpoint exports (``SSL.EXPORT "momentum"``).

    * R50-C4: res4 from ``backbone``, then ``roi_heads.res5`` on the whole map (7 x 7 at 224);
    * R50-FPN: the bottom-up res5 (``backbone.bottom_up``); the FPN layers take no gradient and
      are left out of the export (fine-tuning initialises them), as MoCo-v2 on FPN does.

    Losses: ``loss_slotcon_group``, the per-pixel cross-entropy between the teacher's centred
    assignments of one view and the student's of the other, both RoIAligned on the crops'
    overlap with flips undone, summed over the two directions and weighted by
    SLOTCON.GROUP_LOSS_WEIGHT; ``loss_slotcon_contrast``, the InfoNCE of the predicted student
    slots against the teacher slots of the other view, summed over both directions and weighted
    by 1 minus it.

    Input: a list of dicts ``{"views": [view_1, view_2]}`` from ``SlotConViewsMapper``, each view
    ``{"image": (3, S, S) uint8, "crop_box": (4,) XYXY in the original image, "flipped": bool}``,
    one S for the batch. Training output: the losses; metrics go to the EventStorage as
    ``[metric]slotcon/...``. Eval output: per input, ``{"logits": (K, h, w)}``, the teacher's
    pixel-prototype cosine similarities of ``"image"`` (or of the first view).
    """

    method = "slotcon"
    teacher_parts = ("backbone", "roi_heads", "ssl_head.projector", "ssl_head.grouping")
    # The release's _momentum_update_key_encoder moves parameters only: the teacher's BN running
    # statistics are its own, from its own (train-mode) forward passes.
    teacher_copies_buffers = False
    view_keys = (IMAGE, CROP_BOX, FLIPPED)

    @configurable
    def __init__(
        self,
        *,
        backbone,
        roi_heads,
        ssl_head,
        pixel_mean,
        pixel_std,
        momentum,
        student_temp,
        teacher_temp,
        contrast_temp,
        group_loss_weight,
    ):
        """
        Args:
            backbone (Backbone): the detector backbone (``backbone.*``).
            roi_heads (nn.ModuleDict): ``res5`` for C4, empty for FPN (``roi_heads.*``).
            ssl_head (nn.ModuleDict): ``projector`` (ConvMLP), ``grouping`` (SemanticGrouping),
                ``predictor`` (ConvMLP) and ``center`` (Centering).
            pixel_mean, pixel_std (list[float]): input normalisation, as in GeneralizedRCNN.
            momentum (float): the default m of :meth:`momentum_update`.
            student_temp (float): temperature of the student's assignments.
            teacher_temp (float): temperature of the teacher's assignments.
            contrast_temp (float): temperature of the slot InfoNCE.
            group_loss_weight (float): weight of the grouping loss; the contrast gets 1 minus it.
        """
        super().__init__()
        missing = {"projector", "grouping", "predictor", "center"} - set(ssl_head.keys())
        if missing:
            raise ValueError(f"SlotCon's ssl_head lacks {sorted(missing)}")
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.ssl_head = ssl_head
        self.setup_pretraining(momentum=momentum, pixel_mean=pixel_mean, pixel_std=pixel_std)
        for key, t in (("STUDENT", student_temp), ("TEACHER", teacher_temp)):
            if t <= 0:
                raise ValueError(f"SLOTCON.{key}_TEMP must be positive, got {t}")
        if not 0.0 <= group_loss_weight <= 1.0:
            raise ValueError(
                f"SLOTCON.GROUP_LOSS_WEIGHT must be in [0, 1], got {group_loss_weight}"
            )
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.contrast_temp = contrast_temp
        self.group_loss_weight = group_loss_weight
        self.is_fpn = isinstance(backbone, FPN)

    @classmethod
    def from_config(cls, cfg):
        backbone, roi_heads, in_dim = build_res5_trunk(cfg, "SlotCon")
        sc = cfg.SLOTCON
        if sc.ZERO_INIT_RESIDUAL:
            zero_init_residual_(backbone, roi_heads)
        ssl_head = nn.ModuleDict(
            {
                "projector": ConvMLP(in_dim, sc.HIDDEN_DIM, sc.OUT_DIM, norm=sc.HEAD_NORM),
                "grouping": SemanticGrouping(sc.NUM_PROTOTYPES, sc.OUT_DIM, sc.TEACHER_TEMP),
                "predictor": ConvMLP(sc.OUT_DIM, sc.HIDDEN_DIM, sc.OUT_DIM, norm=sc.HEAD_NORM),
                "center": Centering(sc.NUM_PROTOTYPES, sc.CENTER_MOMENTUM),
            }
        )
        return {
            "backbone": backbone,
            "roi_heads": roi_heads,
            "ssl_head": ssl_head,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "momentum": cfg.SSL.MOMENTUM,
            "student_temp": sc.STUDENT_TEMP,
            "teacher_temp": sc.TEACHER_TEMP,
            "contrast_temp": sc.CONTRAST_TEMP,
            "group_loss_weight": sc.GROUP_LOSS_WEIGHT,
        }

    def encode(self, net, images):
        """
        Args:
            net (nn.Module): ``self`` (student) or ``self.momentum`` (teacher).
            images (Tensor): (N, 3, S, S) normalised views.

        Returns:
            tuple[Tensor, Tensor, Tensor]: projected pixels (N, D, h, w), slots (N, K, D) and
            pixel-prototype logits (N, K, h, w).
        """
        if self.is_fpn:
            x = net.backbone.bottom_up(images)["res5"]
        else:
            x = net.roi_heads.res5(net.backbone(images)["res4"])
        z = net.ssl_head.projector(x)
        slots, logits = net.ssl_head.grouping(z)
        return z, slots, logits

    def preprocess(self, images: List[torch.Tensor]):
        """
        Args:
            images (list[Tensor]): (3, H, W) uint8 views in INPUT.FORMAT, all of one size (no
                padding, which would enter the grouping; the ResNet needs none).

        Returns:
            Tensor: (N, 3, H, W) float, normalised.
        """
        return self.stack_views([{IMAGE: x} for x in images])

    @torch.no_grad()
    def assign(self, images: List[torch.Tensor]):
        """
        The teacher's pixel-prototype logits (cosine similarities), as SlotCon's grouping picture
        and nearest-segment retrieval read them.

        Args:
            images (list[Tensor]): (3, H, W) uint8 images in INPUT.FORMAT, all of one size.

        Returns:
            Tensor: (N, K, h, w).
        """
        return self.encode(self.momentum, self.preprocess(images))[2]

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            images = [x[IMAGE] if IMAGE in x else x["views"][0][IMAGE] for x in batched_inputs]
            return [{"logits": logits} for logits in self.assign(images)]
        views = self.split_views(batched_inputs)
        images = [self.preprocess([v[IMAGE] for v in vs]) for vs in views]
        crops = [self._geometry(vs, CROP_BOX).float() for vs in views]
        flips = [self._geometry(vs, FLIPPED).bool() for vs in views]
        boxes, nonempty = zip(
            overlap_boxes(crops[0], crops[1], flips[0]),
            overlap_boxes(crops[1], crops[0], flips[1]),
        )
        overlap = nonempty[0].float()

        student = [self.encode(self, x) for x in images]
        with torch.no_grad():
            teacher = [self.encode(self.momentum, x) for x in images]

        def aligned(logits, i):
            # Boxes as fractions of the view, scaled by the map's size (the release's invaug).
            return align_to_overlap(logits, boxes[i], flips[i])

        center = self.ssl_head["center"].center
        group, contrast, accs = 0.0, 0.0, []
        for i, j in ((0, 1), (1, 0)):
            s_logits, t_logits = student[i][2], teacher[j][2]
            group = group + grouping_loss(
                aligned(s_logits, i),
                aligned(t_logits, j),
                center,
                self.student_temp,
                self.teacher_temp,
                weights=overlap,
            )
            loss, acc = slot_contrast_loss(
                student[i][1],
                teacher[j][1],
                valid_slots(s_logits),
                valid_slots(t_logits),
                self.ssl_head["predictor"],
                self.contrast_temp,
            )
            contrast = contrast + loss
            accs.append(acc)
        t_logits = torch.cat([teacher[0][2], teacher[1][2]])
        self.ssl_head["center"].update(t_logits.permute(0, 2, 3, 1).flatten(0, 2))

        k = t_logits.shape[1]
        self.put_metrics(
            console={
                "contrast_acc": sum(accs) / 2,
                "valid_slots": valid_slots(t_logits).sum(1).float().mean(),
            },
            others={
                "overlap_fraction": overlap.mean(),
                "used_prototypes_fraction": valid_slots(t_logits).any(0).sum() / k,
            },
        )
        w = self.group_loss_weight
        return {
            self.loss_name("group"): w * group,
            self.loss_name("contrast"): (1.0 - w) * contrast,
        }

    def _geometry(self, views, key):
        """(N, ...) tensor of one geometry key of the views, on the model's device."""
        return torch.stack([torch.as_tensor(v[key]) for v in views]).to(self.device)
