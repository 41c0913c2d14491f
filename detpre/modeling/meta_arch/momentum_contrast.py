"""
The momentum-contrast framework shared by the MoCo-style meta-architectures (InsLoc, MoCo-v2).
"""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling.backbone import FPN
from detectron2.structures import ImageList
from detectron2.utils import comm

from ...views import IMAGE
from ..ssl import QueueBank, batch_shuffle, batch_unshuffle, concat_all_gather, info_nce
from .base import PretrainingMetaArch

__all__ = ["MomentumContrast"]


class MomentumContrast(PretrainingMetaArch):
    """
    MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
    CVPR 2020) over a Detectron2 detector trunk. The query encoder is the network handed over
    (``backbone``, ``roi_heads.*``) plus a projection ``ssl_head``; the key encoder is their
    momentum copy ``momentum.*``, moved by :meth:`momentum_update` after each optimizer step (the
    trainer's ``MomentumScheduleHook`` calls it; forward never changes it); keys are
    computed on a batch shuffled across ranks (shuffle-BN), all-gathered and pushed into one
    negative queue per embedding level (``queues.<level>``); the loss is InfoNCE per level.

    Subclasses set ``method`` (loss / metric names) and implement :meth:`embed`; normalisation,
    the momentum copy and its update come from :class:`PretrainingMetaArch`.

    Input: a list of dicts ``{"views": [query_view, key_view], ...}``, each view
    ``{"image": (3, H, W) uint8 tensor in INPUT.FORMAT, "boxes": Boxes (1, 4)}`` (boxes only where
    the method pools them). Training output: a dict of losses; the top-1 contrastive accuracy of
    every level goes to the EventStorage as ``[metric]<method>/acc[_<level>]``. Eval output: the online
    embeddings of the first view, ``{level: (N, D)}``, without any state change.
    """

    method = "moco"
    teacher_parts = ("backbone", "roi_heads", "ssl_head")
    view_names = ("query_view", "key_view")
    view_keys = (IMAGE,)

    @configurable
    def __init__(
        self,
        *,
        backbone,
        roi_heads,
        ssl_head,
        levels,
        pixel_mean,
        pixel_std,
        embed_dim,
        queue_size,
        temperature,
        momentum,
        shuffle_bn=True,
        bn_groups=1,
        level_suffix=False,
    ):
        """
        Args:
            backbone (Backbone): the detector backbone (``backbone.*``).
            roi_heads (nn.Module): the pretrained part of the RoI heads (``roi_heads.*``).
            ssl_head (nn.Module): the projection head (``ssl_head.*``).
            levels (list[str]): embedding levels, one queue and one loss each.
            pixel_mean, pixel_std (list[float]): input normalisation, as in GeneralizedRCNN.
            embed_dim (int): embedding width (the queues' dim).
            queue_size (int): K, negatives per queue.
            temperature (float): T of InfoNCE.
            momentum (float): the default m of :meth:`momentum_update`.
            shuffle_bn (bool): shuffle the key batch across ranks around the key encoder.
            bn_groups (int): run each encoder on this many equal sub-batches of the per-process
                batch, each with its own BN statistics (a process standing in for that many GPUs).
            level_suffix (bool): name losses ``loss_<method>_<level>`` instead of ``loss_<method>``.
        """
        super().__init__()
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.ssl_head = ssl_head
        self.setup_pretraining(momentum=momentum, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.levels = tuple(levels)
        self.queues = QueueBank(self.levels, queue_size, embed_dim)
        if temperature <= 0:
            raise ValueError(f"SSL.TEMPERATURE must be positive, got {temperature}")
        self.temperature = temperature
        self.shuffle_bn = shuffle_bn
        if bn_groups < 1:
            raise ValueError(f"SSL.BN_GROUPS must be >= 1, got {bn_groups}")
        self.bn_groups = bn_groups
        self.level_suffix = level_suffix
        self.is_fpn = isinstance(backbone, FPN)

    @classmethod
    def from_config(cls, cfg):
        """The shared keys; subclasses add ``backbone``, ``roi_heads``, ``ssl_head``, ``levels``."""
        world = comm.get_world_size()
        per_process = cfg.SOLVER.IMS_PER_BATCH // max(world, 1)
        if cfg.SSL.BN_GROUPS > 1 and per_process % cfg.SSL.BN_GROUPS:
            raise ValueError(
                f"SSL.BN_GROUPS {cfg.SSL.BN_GROUPS} does not divide the per-process batch of "
                f"{per_process} (SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} over {world} "
                "processes); with several processes per-GPU BN already holds: set SSL.BN_GROUPS 1"
            )
        return {
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "embed_dim": cfg.SSL.PROJ_DIM,
            "queue_size": cfg.SSL.QUEUE_SIZE,
            "temperature": cfg.SSL.TEMPERATURE,
            "momentum": cfg.SSL.MOMENTUM,
            "shuffle_bn": cfg.SSL.SHUFFLE_BN,
            "bn_groups": cfg.SSL.BN_GROUPS,
        }

    def embed(
        self, net, images: ImageList, boxes: Optional[torch.Tensor], is_query: bool
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            net (nn.Module): ``self`` (query encoder) or ``self.momentum`` (key encoder); both have
                ``backbone``, ``roi_heads`` and ``ssl_head``.
            images (ImageList): normalised, padded batch of N views.
            boxes (Tensor or None): (N, 4) one XYXY box per view, in its pixels.
            is_query (bool): whether these are query views (query-only augmentations apply).

        Returns:
            dict[str, Tensor]: level -> (N, D) L2-normalised embeddings.
        """
        raise NotImplementedError

    def embed_in_groups(self, net, images: ImageList, boxes: Optional[torch.Tensor], is_query):
        """
        :meth:`embed` on SSL.BN_GROUPS consecutive equal sub-batches, concatenated: BN then
        normalises each sub-batch with its own statistics, as per-GPU BN on that many GPUs.

        Args:
            net, is_query: as in :meth:`embed`.
            images (ImageList): N views, N divisible by the number of groups.
            boxes (Tensor or None): (N, 4).

        Returns:
            dict[str, Tensor]: level -> (N, D), in the order of ``images``.
        """
        if self.bn_groups == 1:
            return self.embed(net, images, boxes, is_query)
        n = len(images.image_sizes)
        if n % self.bn_groups:
            raise ValueError(
                f"SSL.BN_GROUPS {self.bn_groups} does not divide the per-process batch of {n}"
            )
        outputs = []
        for idx in torch.arange(n).chunk(self.bn_groups):
            sub = ImageList(images.tensor[idx], [images.image_sizes[i] for i in idx.tolist()])
            outputs.append(self.embed(net, sub, None if boxes is None else boxes[idx], is_query))
        return {level: torch.cat([o[level] for o in outputs]) for level in outputs[0]}

    def forward(self, batched_inputs: List[Dict]):
        query_views, key_views = self.split_views(batched_inputs)
        if not self.training:
            images, boxes = self.preprocess(query_views)
            return self.embed(self, images, boxes, is_query=False)

        images, boxes = self.preprocess(query_views)
        q = self.embed_in_groups(self, images, boxes, is_query=True)
        k = self.encode_keys(*self.preprocess(key_views))

        losses, metrics = {}, {}
        for level in self.levels:
            negatives = self.queues[level].queue.clone()
            loss, acc = info_nce(q[level], k[level], negatives, self.temperature)
            part = level if self.level_suffix else ""
            losses[self.loss_name(part)] = loss
            metrics[f"acc_{part}" if part else "acc"] = acc
        self.queues.enqueue({level: concat_all_gather(k[level]) for level in self.levels})
        self.put_metrics(console=metrics)
        return losses

    @torch.no_grad()
    def encode_keys(self, images: ImageList, boxes: Optional[torch.Tensor]):
        """
        The key encoder on ``images`` (shuffled across ranks with their boxes and sizes when
        shuffle-BN is on, outputs unshuffled).

        Returns:
            dict[str, Tensor]: level -> (N, D) keys, in the order of ``images``.
        """
        if not self.shuffle_bn:
            return self.embed_in_groups(self.momentum, images, boxes, is_query=False)
        sizes = torch.as_tensor(images.image_sizes, dtype=torch.long, device=self.device)
        extras = [sizes] if boxes is None else [sizes, boxes]
        tensor, extras, idx_unshuffle = batch_shuffle(images.tensor, *extras)
        shuffled = ImageList(tensor, [(int(h), int(w)) for h, w in extras[0].tolist()])
        k = self.embed_in_groups(
            self.momentum, shuffled, None if boxes is None else extras[1], is_query=False
        )
        stacked = batch_unshuffle(
            torch.stack([k[level] for level in self.levels], dim=1), idx_unshuffle
        )
        return dict(zip(self.levels, stacked.unbind(dim=1)))

    def preprocess(self, views: List[Dict]):
        """
        Normalise, pad and batch the images of one view per input, as GeneralizedRCNN does.

        Returns:
            tuple[ImageList, Tensor or None]: the batch, and (N, 4) boxes when every view has
            ``"boxes"`` (None when none has).
        """
        images = [self.normalize(v["image"]) for v in views]
        images = ImageList.from_tensors(
            images,
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        with_boxes = ["boxes" in v for v in views]
        if not any(with_boxes):
            return images, None
        if not all(with_boxes):
            raise ValueError("Some views have 'boxes' and some do not")
        for v in views:
            if len(v["boxes"]) != 1:
                raise ValueError(f"Each view must carry exactly one box, got {len(v['boxes'])}")
        boxes = torch.cat([v["boxes"].tensor for v in views]).to(self.device, torch.float32)
        return images, boxes
