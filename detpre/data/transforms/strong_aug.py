"""
The strong augmentation presets of noisy-student self-training (Zoph et al., "Rethinking
Pre-training and Self-training", NeurIPS 2020, Sec. 3.1), as lists of Detectron2 augmentations for
``DatasetMapper(cfg, is_train=True, augmentations=...)``: boxes, polygons and bitmask / RLE masks
move with the image through Detectron2's ``transform_instance_annotations``.

* "none": Detectron2's standard ResizeShortestEdge + flip (INPUT.* keys);
* "S1" FlipCrop: flip, scale jitter (0.8, 1.2), crop;
* "S2" AutoAugment: the detection AutoAugment policy, then S1;
* "S3": the AutoAugment policy, flip, large scale jitter (0.5, 2.0), crop;
* "S4": RandAugment (magnitude 10), flip, large scale jitter (0.5, 2.0), crop.

Scale jitter + crop is Detectron2's ``ResizeScale`` + ``FixedSizeCrop`` to a square of
``image_size`` (the TF ``resize_and_crop`` of RetinaNet and of large scale jitter). AutoAugment /
RandAugment run first, on the decoded image, as in the TF detection input pipeline.
"""

from typing import List

from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .autoaugment import DetectionAutoAugment, RandAugment
from .geometric_ops import PolygonClipFixedSizeCrop

__all__ = ["STRONG_AUG_PRESETS", "build_strong_augmentation", "build_strong_augmentation_preset"]

STRONG_AUG_PRESETS = ("none", "S1", "S2", "S3", "S4")
_FLIPS = ("none", "horizontal", "vertical")


def _flip(flip):
    if flip not in _FLIPS:
        raise ValueError(f"INPUT.RANDOM_FLIP={flip!r}: expected one of {_FLIPS}")
    if flip == "none":
        return []
    return [T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical")]


def _check_range(key, scale_range):
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"INPUT.STRONG_AUG.{key}={tuple(scale_range)}: expected 0 < min <= max")


def build_strong_augmentation_preset(
    name,
    *,
    image_size=1024,
    scale_range=(0.8, 1.2),
    large_scale_range=(0.5, 2.0),
    autoaug_policy="v0",
    randaug_num_ops=2,
    randaug_magnitude=10,
    randaug_consts=(100.0, 40.0),
    randaug_identity_slot=True,
    flip="horizontal",
    min_size=(800,),
    max_size=1333,
    sample_style="choice",
    image_format="BGR",
) -> List[T.Augmentation]:
    """
    The augmentations of one preset.

    Args:
        name (str): one of ``STRONG_AUG_PRESETS``.
        image_size (int): side of the square output of S1-S4.
        scale_range (tuple[float, float]): scale jitter of S1 and S2.
        large_scale_range (tuple[float, float]): scale jitter of S3 and S4.
        autoaug_policy (str): detection AutoAugment policy of S2 and S3 ("v0" or "v1").
        randaug_num_ops (int): RandAugment's N (S4).
        randaug_magnitude (float): RandAugment's M in [0, 10] (S4).
        randaug_consts (tuple[float, float]): RandAugment's translation and Cutout half-width in
            pixels at M = 10 for a 640 px image (S4; TF's 100 and 40).
        randaug_identity_slot (bool): RandAugment draws a no-op slot too (S4; TF does).
        flip (str): "horizontal", "vertical" or "none" (Detectron2's INPUT.RANDOM_FLIP).
        min_size (tuple[int]): shorter side of "none" (INPUT.MIN_SIZE_TRAIN).
        max_size (int): longer side limit of "none" (INPUT.MAX_SIZE_TRAIN).
        sample_style (str): "choice" or "range" (INPUT.MIN_SIZE_TRAIN_SAMPLING).
        image_format (str): channel order of the images, "BGR" or "RGB" (INPUT.FORMAT).

    Returns:
        list[Augmentation]: for ``DatasetMapper(augmentations=...)`` or ``T.AugmentationList``.
            Images must be HxWx3 uint8.
    """
    if name not in STRONG_AUG_PRESETS:
        raise ValueError(f"INPUT.STRONG_AUG.PRESET={name!r}: expected one of {STRONG_AUG_PRESETS}")
    if name == "none":
        return [T.ResizeShortestEdge(min_size, max_size, sample_style)] + _flip(flip)
    if int(image_size) <= 0:
        raise ValueError(f"INPUT.STRONG_AUG.IMAGE_SIZE={image_size} must be positive")
    _check_range("SCALE_RANGE", scale_range)
    _check_range("LARGE_SCALE_RANGE", large_scale_range)
    size = int(image_size)
    lo, hi = large_scale_range if name in ("S3", "S4") else scale_range
    flip_crop = _flip(flip) + [
        T.ResizeScale(lo, hi, size, size),
        PolygonClipFixedSizeCrop((size, size)),
    ]
    if name == "S1":
        return flip_crop
    if name in ("S2", "S3"):
        return [DetectionAutoAugment(autoaug_policy, image_format=image_format)] + flip_crop
    rand_augment = RandAugment(
        randaug_num_ops,
        randaug_magnitude,
        image_format=image_format,
        consts=randaug_consts,
        identity_slot=randaug_identity_slot,
    )
    return [rand_augment] + flip_crop


def build_strong_augmentation(cfg, is_train=True) -> List[T.Augmentation]:
    """
    The augmentations of ``cfg.INPUT.STRONG_AUG.PRESET`` for training; Detectron2's test-time
    resize for evaluation.

    Args:
        cfg (CfgNode): a detpre config.
        is_train (bool): training (the preset) or evaluation (``ResizeShortestEdge`` of
            INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST).

    Returns:
        list[Augmentation]
    """
    if not is_train:
        return utils.build_augmentation(cfg, False)
    sa = cfg.INPUT.STRONG_AUG
    return build_strong_augmentation_preset(
        sa.PRESET,
        image_size=sa.IMAGE_SIZE,
        scale_range=tuple(sa.SCALE_RANGE),
        large_scale_range=tuple(sa.LARGE_SCALE_RANGE),
        autoaug_policy=sa.AUTOAUG_POLICY,
        randaug_num_ops=sa.RANDAUG_NUM_OPS,
        randaug_magnitude=sa.RANDAUG_MAGNITUDE,
        randaug_consts=(sa.RANDAUG_TRANSLATE_CONST, sa.RANDAUG_CUTOUT_CONST),
        randaug_identity_slot=sa.RANDAUG_IDENTITY_SLOT,
        flip=cfg.INPUT.RANDOM_FLIP,
        min_size=cfg.INPUT.MIN_SIZE_TRAIN,
        max_size=cfg.INPUT.MAX_SIZE_TRAIN,
        sample_style=cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
        image_format=cfg.INPUT.FORMAT,
    )
