"""
LOCA's views: one reference crop and several query crops of an image, with the geometry of each
(its crop box in the original image and whether it is flipped) recorded for the position targets.
"""

import random

import torch
from detectron2.config import configurable

from ...views import CROP_BOX, FLIPPED, IMAGE
from ..build import PRETRAIN_MAPPER_REGISTRY
from ..transforms.crops import (
    chw_tensor,
    hflip_image,
    resize_bilinear,
    sample_crop,
    sample_distorted_crop,
)
from ..transforms.view_aug import build_view_augmentations
from .base import PretextMapper, check_range

__all__ = ["LocaViewsMapper"]


@PRETRAIN_MAPPER_REGISTRY.register()
class LocaViewsMapper(PretextMapper):
    """
    The views of LOCA (Caron et al., "Location-Aware Self-Supervised Transformers for Semantic
    Segmentation", 2022), in this order:

    * a reference: a random crop (LOCA.REFERENCE_SCALE of the image's area, LOCA.CROP_RATIO)
      resized to LOCA.REFERENCE_SIZE, flipped with LOCA.REFERENCE_FLIP_PROB;
    * a large query: a LOCA.QUERY_SCALE crop resized to LOCA.QUERY_SIZE;
    * LOCA.NUM_FOCAL_QUERIES focal queries: LOCA.FOCAL_SCALE crops resized to LOCA.FOCAL_SIZE;

    queries flipped with LOCA.QUERY_FLIP_PROB, and each kind of view pixel-augmented with its own
    probabilities (:func:`build_view_augmentations`, the LOCA node). The values, the release's,
    are in ``docs/parity/loca.md``.

    Crops are drawn as the release's ``tf.image.sample_distorted_bounding_box`` draws them
    (LOCA.CROP_RULE "tf") and resized bilinearly without antialiasing, as its ``tf.image.resize``.

    No view is blurred by default, as in the release, whose config passes the blur
    probabilities where ``random_blur`` takes the image height (a one-tap kernel); with
    LOCA.RELEASE_BLUR False the views are blurred with LOCA.BLUR_PROB, the evident intent.

    Every view is ``{"image": uint8 (3, S, S), "crop_box": float32 (4,) XYXY region of the
    original image it was resized from, "flipped": bool}``; the model derives the position targets from ``crop_box`` and ``flipped``
    (:func:`detpre.modeling.loca.patch_positions.patch_position_targets`).
    """

    @configurable
    def __init__(
        self,
        *,
        reference_size,
        reference_scale,
        reference_flip_prob,
        query_size,
        query_scale,
        num_focal_queries,
        focal_size,
        focal_scale,
        crop_ratio,
        crop_rule="tf",
        query_flip_prob,
        reference_aug,
        query_aug,
        focal_aug,
        image_format,
        draft_decode=True,
    ):
        """
        Args:
            reference_size, query_size, focal_size (int): sides of the square views.
            reference_scale, query_scale, focal_scale (tuple[float, float]): crop area ranges,
                as fractions of the image.
            reference_flip_prob, query_flip_prob (float): flip probabilities of the reference and
                of every query.
            num_focal_queries (int): number of focal queries (>= 0).
            crop_ratio (tuple[float, float]): aspect-ratio range of every crop.
            crop_rule (str): "tf" draws crops as the release's
                ``tf.image.sample_distorted_bounding_box`` (:func:`sample_distorted_crop`),
                "torchvision" as ``RandomResizedCrop`` (:func:`sample_crop`).
            reference_aug, query_aug, focal_aug (callable): uint8 (3, S, S) -> uint8 (3, S, S).
            image_format (str): INPUT.FORMAT, "RGB" or "BGR".
            draft_decode (bool): see :class:`PretextMapper`.
        """
        super().__init__(image_format=image_format, draft_decode=draft_decode)
        for key, size in (
            ("REFERENCE_SIZE", reference_size),
            ("QUERY_SIZE", query_size),
            ("FOCAL_SIZE", focal_size),
        ):
            if size < 1:
                raise ValueError(f"LOCA.{key}={size} must be a positive side in pixels")
        if num_focal_queries < 0:
            raise ValueError(f"LOCA.NUM_FOCAL_QUERIES={num_focal_queries} must be >= 0")
        for key, p in (
            ("REFERENCE_FLIP_PROB", reference_flip_prob),
            ("QUERY_FLIP_PROB", query_flip_prob),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"LOCA.{key}={p} is not a probability")
        self.crop_ratio = check_range("LOCA.CROP_RATIO", crop_ratio)
        samplers = {"tf": sample_distorted_crop, "torchvision": sample_crop}
        if crop_rule not in samplers:
            raise ValueError(f"LOCA.CROP_RULE={crop_rule!r} must be one of {sorted(samplers)}")
        self.sample_crop = samplers[crop_rule]
        # (side, area range, flip probability, augmentation) of every view, in output order.
        self.specs = [
            (
                int(reference_size),
                check_range("LOCA.REFERENCE_SCALE", reference_scale, high=1.0),
                reference_flip_prob,
                reference_aug,
            ),
            (
                int(query_size),
                check_range("LOCA.QUERY_SCALE", query_scale, high=1.0),
                query_flip_prob,
                query_aug,
            ),
        ]
        focal_scale = check_range("LOCA.FOCAL_SCALE", focal_scale, high=1.0)
        self.specs += [(int(focal_size), focal_scale, query_flip_prob, focal_aug)] * int(
            num_focal_queries
        )

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        # dataset_dicts: part of the pretext-mapper signature; LOCA needs no other image.
        cls.check_train(is_train)
        loca = cfg.LOCA
        # The release's blur is a no-op (see LOCA.RELEASE_BLUR).
        augs = build_view_augmentations(
            cfg, "LOCA", ("reference", "large query", "focal queries"), blur=not loca.RELEASE_BLUR
        )
        return {
            "reference_size": loca.REFERENCE_SIZE,
            "reference_scale": tuple(loca.REFERENCE_SCALE),
            "reference_flip_prob": loca.REFERENCE_FLIP_PROB,
            "query_size": loca.QUERY_SIZE,
            "query_scale": tuple(loca.QUERY_SCALE),
            "num_focal_queries": loca.NUM_FOCAL_QUERIES,
            "focal_size": loca.FOCAL_SIZE,
            "focal_scale": tuple(loca.FOCAL_SCALE),
            "crop_ratio": tuple(loca.CROP_RATIO),
            "crop_rule": loca.CROP_RULE,
            "query_flip_prob": loca.QUERY_FLIP_PROB,
            "reference_aug": augs[0],
            "query_aug": augs[1],
            "focal_aug": augs[2],
            "image_format": cfg.INPUT.FORMAT,
            "draft_decode": cfg.INPUT.SSL_AUG.DRAFT_DECODE,
        }

    @property
    def num_views(self):
        return len(self.specs)

    def make_views(self, image, dataset_dict):
        """
        Args:
            image (ImageFile): the dataset image (decoded once, for all views).
            dataset_dict (dict): its dataset dict (unused).

        Returns:
            list[dict]: [reference, large query, focal queries...], see the class docstring.
        """
        # The crops and flips first (the release's draws, in its order), then one decode for all.
        crops, flips = [], []
        for side, scale, flip_prob, aug in self.specs:
            crops.append(self.sample_crop(*image.shape, scale, self.crop_ratio))
            flips.append(random.random() < flip_prob)
        sizes = [(side, side) for side, _, _, _ in self.specs]
        resized = self.resized_crops(image, crops, sizes, resize=resize_bilinear)
        views = []
        for (side, _, _, aug), (y, x, h, w), view, flipped in zip(
            self.specs, crops, resized, flips
        ):
            tensor = chw_tensor(hflip_image(view) if flipped else view)
            views.append(
                {
                    IMAGE: aug(tensor),
                    CROP_BOX: torch.tensor([x, y, x + w, y + h], dtype=torch.float32),
                    FLIPPED: flipped,
                }
            )
        return views
