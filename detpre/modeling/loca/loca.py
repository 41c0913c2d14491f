"""LOCA: query-to-reference patch position prediction and patch-cluster prediction."""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.backbone import FPN
from torch import nn

from ...views import CROP_BOX, FLIPPED, IMAGE
from ..backbone.dilation import dilate_stage
from ..meta_arch.base import PretrainingMetaArch
from ..meta_arch.encoder import Res5TrunkExport, build_res5_trunk
from .cluster_losses import masked_soft_cross_entropy, mean_entropy_penalty
from .loca_head import LocaHead
from .patch_positions import patch_position_targets
from .position_embedding import resize_abs_pos
from .prototype_head import PrototypeHead
from .sinkhorn import sinkhorn_knopp

__all__ = ["LOCA"]


def _check_vit(vit):
    if vit.pos_embed is None:
        raise ValueError(
            "LOCA needs the ViT's absolute position embeddings: MODEL.VIT.USE_ABS_POS True"
        )
    for i, blk in enumerate(vit.blocks):
        if blk.window_size > 0 or blk.attn.use_rel_pos or blk.use_residual_block:
            raise ValueError(
                "LOCA runs the ViT with global attention (one 14x14 window at 224), no relative "
                f"positions and no residual blocks, but block {i} has window {blk.window_size}, "
                f"rel_pos {blk.attn.use_rel_pos}, residual {blk.use_residual_block}: set "
                "MODEL.VIT.WINDOW_BLOCK_INDEXES [], MODEL.VIT.USE_REL_POS False and "
                "MODEL.VIT.RESIDUAL_BLOCK_INDEXES []"
            )


@META_ARCH_REGISTRY.register()
class LOCA(Res5TrunkExport, PretrainingMetaArch):
    """
    LOCA (Caron, Houlsby and Schmid, "Location-Aware Self-Supervised Transformers for Semantic
    Segmentation", 2022) on a Detectron2 backbone. An EMA teacher (``momentum.*``) encodes the
    reference view and keeps a contiguous run of LOCA.REFERENCE_KEEP_RATIO of its tokens; the student encodes the
    queries, and for every query token predicts

    * which of the reference's grid cells it lies in: one pre-norm cross-attention block (queries
      from the query tokens, keys and values from the kept reference tokens) and a linear
      classifier over the cells, cross-entropy against targets from the crops' geometry (cells
      outside the reference ignored), ``loss_loca_position``;
    * the teacher's Sinkhorn-balanced cluster assignment of the reference patch at its target
      position (soft cross-entropy at LOCA.STUDENT_TEMPERATURE against the teacher's softmax at
      LOCA.TEACHER_TEMPERATURE) plus the
      mean-entropy maximisation term, ``loss_loca_cluster``.

    Trunks:

    * ViT (``build_vitdet_backbone``): Detectron2's ViT held as ``backbone.net`` (the
      SimpleFeaturePyramid is not built: its layers are new in fine-tuning), run with global
      attention and without relative positions; the large query keeps ``LOCA.QUERY_KEEP_TOKENS``
      random tokens at its input;
    * ResNet (detpre's own: the release is ViT only): res5 run with dilation 2 and stride 1
      (:func:`dilate_stage`, Detectron2's ``RES5_DILATION`` rule), so that its output keeps
      res4's stride 16 and a 224 px view its 14x14 grid, projected by a 1x1 conv into tokens; a
      learned position embedding is added to the reference tokens in the position predictor.
      Every stage the detector loads is trained: R50-C4's ``backbone`` (stem..res4) and
      ``roi_heads.res5``, R50-FPN's ``backbone.bottom_up``. Stride and dilation are not in the
      state dict, so the res5 weights load into the detector's stride-2 res5 unchanged. On
      R50-FPN the FPN layers take no gradient and are not exported
      (:attr:`export_excluded_prefixes`): fine-tuning initialises them.

    Input: ``{"views": [reference, large query, focal queries...]}`` per image, every view with
    ``"image"``, ``"crop_box"`` and ``"flipped"`` (see ``LocaViewsMapper``). Training output: the
    two losses; the position accuracy and the fraction of query tokens inside the reference go to
    the EventStorage. Eval output: ``{"tokens": (N, L, D)}`` of the first view (online encoder).
    """

    method = "loca"
    teacher_parts = ("backbone", "roi_heads", "ssl_head")
    view_names = ("reference", "large_query")
    view_keys = (IMAGE, CROP_BOX, FLIPPED)
    more_views = True  # the focal queries

    @configurable
    def __init__(
        self,
        *,
        backbone,
        roi_heads,
        ssl_head,
        stride,
        pixel_mean,
        pixel_std,
        reference_keep_ratio,
        query_keep_tokens,
        teacher_temperature,
        student_temperature,
        sinkhorn_iters,
        cluster_loss_weight,
        momentum,
    ):
        """
        Args:
            backbone (nn.Module): ``nn.ModuleDict({"net": ViT})``, a ResNet (C4) or an FPN.
            roi_heads (nn.ModuleDict): ``{"res5": dilated res5}`` on R50-C4, else empty.
            ssl_head (LocaHead): ``ssl_head.*``.
            stride (int): token stride in pixels (patch size, or 16 for dilated res5).
            pixel_mean, pixel_std (list[float]): input normalisation.
            reference_keep_ratio (float): fraction of reference tokens the teacher keeps.
            query_keep_tokens (int): tokens kept of the large query; <= 0 keeps all.
            teacher_temperature, student_temperature (float): softmax temperatures.
            sinkhorn_iters (int): Sinkhorn-Knopp iterations on the teacher's assignments.
            cluster_loss_weight (float): weight of ``loss_loca_cluster``; 0 drops it.
            momentum (float): the default m of :meth:`momentum_update`.
        """
        super().__init__()
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.ssl_head = ssl_head
        self.setup_pretraining(momentum=momentum, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.is_vit = isinstance(backbone, nn.ModuleDict)
        self.is_fpn = isinstance(backbone, FPN)
        self.stride = stride
        if not 0.0 < reference_keep_ratio <= 1.0:
            raise ValueError(
                f"LOCA.REFERENCE_KEEP_RATIO must be in (0, 1], got {reference_keep_ratio}"
            )
        if min(teacher_temperature, student_temperature) <= 0:
            raise ValueError(
                "LOCA.TEACHER_TEMPERATURE and LOCA.STUDENT_TEMPERATURE must be positive"
            )
        if (cluster_loss_weight > 0) != (ssl_head.cluster_head is not None):
            raise ValueError("A cluster head is needed exactly when LOCA.CLUSTER_LOSS_WEIGHT > 0")
        self.reference_keep_ratio = reference_keep_ratio
        self.query_keep_tokens = query_keep_tokens
        self.teacher_temperature = teacher_temperature
        self.student_temperature = student_temperature
        self.sinkhorn_iters = sinkhorn_iters
        self.cluster_loss_weight = cluster_loss_weight

    @classmethod
    def from_config(cls, cfg):
        loca = cfg.LOCA
        in_channels, roi_heads = None, nn.ModuleDict()
        if cfg.MODEL.BACKBONE.NAME == "build_vitdet_backbone":
            backbone = build_backbone(cfg)
            _check_vit(backbone.net)
            dim = backbone.net.output_shape()[cfg.MODEL.VIT.OUT_FEATURE].channels
            stride = cfg.MODEL.VIT.PATCH_SIZE
            backbone = nn.ModuleDict({"net": backbone.net})
        else:
            backbone, roi_heads, in_channels = build_res5_trunk(cfg, "LOCA")
            resnet = backbone.bottom_up if isinstance(backbone, FPN) else backbone
            stride = resnet.output_shape()["res4"].stride
            dilate_stage(roi_heads["res5"] if "res5" in roi_heads else resnet.res5, dilation=2)
            dim = loca.RESNET_TOKEN_DIM
        if loca.REFERENCE_SIZE % stride:
            raise ValueError(
                f"LOCA.REFERENCE_SIZE {loca.REFERENCE_SIZE} is not a multiple of the token "
                f"stride {stride}"
            )
        num_positions = (loca.REFERENCE_SIZE // stride) ** 2
        cluster_head = None
        if loca.CLUSTER_LOSS_WEIGHT > 0:
            cluster_head = PrototypeHead(
                dim,
                hidden_dim=loca.HEAD_HIDDEN_DIM,
                num_layers=loca.HEAD_NUM_LAYERS,
                bottleneck_dim=loca.HEAD_BOTTLENECK_DIM,
                num_prototypes=loca.NUM_PROTOTYPES,
            )
        ssl_head = LocaHead(
            dim=dim,
            num_positions=num_positions,
            num_heads=loca.CROSS_ATTENTION_HEADS,
            mlp_ratio=loca.MLP_RATIO,
            cluster_head=cluster_head,
            in_channels=in_channels,
        )
        return {
            "backbone": backbone,
            "roi_heads": roi_heads,
            "ssl_head": ssl_head,
            "stride": stride,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "reference_keep_ratio": loca.REFERENCE_KEEP_RATIO,
            "query_keep_tokens": loca.QUERY_KEEP_TOKENS,
            "teacher_temperature": loca.TEACHER_TEMPERATURE,
            "student_temperature": loca.STUDENT_TEMPERATURE,
            "sinkhorn_iters": loca.SINKHORN_ITERS,
            "cluster_loss_weight": loca.CLUSTER_LOSS_WEIGHT,
            "momentum": cfg.SSL.MOMENTUM,
        }

    @property
    def num_positions(self):
        return self.ssl_head.position_classifier.out_features

    def tokens(self, net, images, keep=None):
        """
        Encode images into normalised tokens.

        Args:
            net (nn.Module): ``self`` (student) or ``self.momentum`` (teacher).
            images (Tensor): (N, 3, S, S) normalised images, S a multiple of the stride.
            keep (Tensor or None): (L,) int64 row-major grid cells to keep; None keeps all. A ViT
                drops the others at its input, a ResNet after its dilated res5.

        Returns:
            Tensor: (N, L, D) tokens, row-major over the (S / stride)^2 grid when ``keep`` is None.
        """
        if self.is_vit:
            vit = net.backbone.net
            x = vit.patch_embed(images)
            x = x + resize_abs_pos(vit.pos_embed, vit.pretrain_use_cls_token, x.shape[1:3])
            if keep is not None:
                # Global attention needs no 2-D layout: the kept tokens run as a 1 x L grid.
                x = x.flatten(1, 2)[:, keep].unsqueeze(1)
            for blk in vit.blocks:
                x = blk(x)
            x = x.flatten(1, 2)
        else:
            if self.is_fpn:
                x = net.backbone.bottom_up(images)["res5"]
            else:
                x = net.roi_heads.res5(net.backbone(images)["res4"])
            x = net.ssl_head.token_proj(x).flatten(2).transpose(1, 2)
            if keep is not None:
                x = x[:, keep]
        return net.ssl_head.encoder_norm(x)

    def forward(self, batched_inputs):
        if not self.training:
            for x in batched_inputs:
                if not x.get("views"):
                    raise ValueError(f"LOCA inputs need 'views', got keys {sorted(x)}")
            reference = [x["views"][0] for x in batched_inputs]
            return {"tokens": self.tokens(self, self._images(reference))}
        reference, query, *focal = self.split_views(batched_inputs)
        # Image-major: the focal queries of image 0, then of image 1, ...
        focal = [v for per_image in zip(*focal) for v in per_image]
        num_images, num_focal = len(reference), len(focal) // len(reference)

        # Teacher: every reference token for the cluster targets, a contiguous run for the keys.
        with torch.no_grad():
            teacher = self.tokens(self.momentum, self._images(reference))
            num_pos = teacher.shape[1]
            if num_pos != self.num_positions:
                raise ValueError(
                    f"The reference views give {num_pos} tokens, the position classifier has "
                    f"{self.num_positions} classes: the mapper's reference size must be "
                    "LOCA.REFERENCE_SIZE"
                )
            num_keep = max(1, int(self.reference_keep_ratio * num_pos))
            start = int(torch.randint(0, num_pos - num_keep + 1, (1,)))
            ref_index = torch.arange(start, start + num_keep, device=self.device)
            kept = teacher[:, ref_index]
            if self.cluster_loss_weight > 0:
                scores = self.momentum.ssl_head.cluster_head(teacher).flatten(0, 1)
                assignments = sinkhorn_knopp(
                    F.softmax(scores.float() / self.teacher_temperature, dim=1), self.sinkhorn_iters
                ).view(num_images, num_pos, -1)

        # Student: the large query (random tokens kept) and the focal queries.
        groups = [(query, torch.arange(num_images))]
        if num_focal:
            groups.append((focal, torch.arange(num_images).repeat_interleave(num_focal)))
        tokens, targets, owners = [], [], []
        for views, owner in groups:
            images = self._images(views)
            grid = images.shape[-1] // self.stride
            keep = None
            if views is query and 0 < self.query_keep_tokens < grid * grid:
                keep = torch.randperm(grid * grid)[: self.query_keep_tokens].sort().values
            target = self._targets(views, [reference[i] for i in owner.tolist()], grid)
            if keep is not None:
                target, keep = target[:, keep], keep.to(self.device)
            tokens.append(self.tokens(self, images, keep))
            targets.append(target.to(self.device))
            owners.append(owner.to(self.device)[:, None].expand_as(target))

        logits = torch.cat(
            [
                self.ssl_head.predict_positions(t, kept[o[:, 0]], ref_index).flatten(0, 1)
                for t, o in zip(tokens, owners)
            ]
        )
        target = torch.cat([t.flatten() for t in targets])
        valid = target >= 0
        num_valid = valid.sum().clamp(min=1)
        losses = {
            self.loss_name("position"): F.cross_entropy(
                logits.float(), target, ignore_index=-1, reduction="sum"
            )
            / num_valid
        }
        console = {"position_acc": ((logits.argmax(dim=1) == target) & valid).sum() / num_valid}
        others = {
            "query_tokens_inside": valid.float().mean(),
            # Targets among the kept reference tokens, the ones a query token can be matched to:
            # what a perfect matcher would reach with no prior on the other cells.
            "targets_in_kept": ((target >= start) & (target < start + num_keep)).sum() / num_valid,
        }
        if self.cluster_loss_weight > 0:
            student = torch.cat([self.ssl_head.cluster_head(t).flatten(0, 1) for t in tokens])
            student = student / self.student_temperature
            owner = torch.cat([o.flatten() for o in owners])
            teacher_targets = assignments[owner, target.clamp(min=0)]
            entropy_term = mean_entropy_penalty(student)
            loss = masked_soft_cross_entropy(student, teacher_targets, valid) + entropy_term
            losses[self.loss_name("cluster")] = self.cluster_loss_weight * loss
            others["mean_prediction_entropy"] = -entropy_term
        self.put_metrics(console=console, others=others)
        return losses

    def _images(self, views):
        """(N, 3, S, S) normalised float batch of one view group (all of one square size)."""
        images = self.stack_views(views)
        if images.shape[-1] % self.stride or images.shape[-2] != images.shape[-1]:
            raise ValueError(
                f"LOCA views must be squares with a side multiple of {self.stride}, got "
                f"{tuple(images.shape[-2:])}"
            )
        return images

    def _targets(self, queries, references, grid):
        """(N, grid^2) reference cell under each query cell, -1 outside, on the CPU."""
        ref_grid = int(round(self.num_positions**0.5))

        def geometry(views):
            boxes = torch.stack([torch.as_tensor(v["crop_box"]) for v in views])
            return boxes, torch.tensor([bool(v["flipped"]) for v in views])

        return patch_position_targets(
            *geometry(queries), (grid, grid), *geometry(references), (ref_grid, ref_grid)
        )
