"""
InsLoc's copy-paste composition: two crops of the dataset image pasted onto two other images of
the dataset, the pasted rectangles being the boxes the model pools.
"""

import random

from detectron2.config import configurable
from detectron2.data.common import DatasetFromList

from ..build import PRETRAIN_MAPPER_REGISTRY, get_pretrain_dicts
from ..image_io import CorruptImageError
from ..transforms.crops import resize_bilinear, sample_crop
from .base import check_range
from .two_views import TwoViewsMapper

__all__ = [
    "InsLocCompositionMapper",
    "paste",
    "rescale_size",
    "sample_paste_size",
    "sample_position",
]

# What _read_background returns when the dataset image itself is drawn as a background.
_OWN_IMAGE = object()


def sample_paste_size(size_range, rng=random):
    """
    The (w, h) a foreground crop is rescaled to, each drawn as numpy's ``randint(low, high)``
    (``high`` excluded), as the release's ``CopyAndPaste.get_scale``; ``low`` itself when
    ``low == high``.

    Args:
        size_range (tuple[int, int]): (low, high), ``1 <= low <= high``.
        rng: an object with ``randrange(a, b)`` (``b`` excluded), e.g. the ``random`` module.

    Returns:
        tuple[int, int]: (w, h), each in ``[low, high)``.
    """
    low, high = size_range
    if low == high:
        return low, low
    return rng.randrange(low, high), rng.randrange(low, high)


def rescale_size(crop_h, crop_w, w, h):
    """
    The size of a crop rescaled with its aspect ratio kept so that its long side fits
    ``max(w, h)`` and its short side fits ``min(w, h)``, whatever the crop's orientation: mmcv's
    ``imrescale(crop, (w, h))`` rule (scale ``min(max(w, h) / long, min(w, h) / short)``, sides
    rounded half up), which the release's ``CopyAndPaste`` applies.

    Args:
        crop_h, crop_w (int): crop size, both >= 1.
        w, h (int): the drawn scale, both >= 1.

    Returns:
        tuple[int, int]: (new_h, new_w), each at least 1.
    """
    if min(crop_h, crop_w, w, h) < 1:
        raise ValueError(
            f"rescale_size needs positive sizes, got crop {crop_h}x{crop_w} to {w}x{h}"
        )
    scale = min(max(w, h) / max(crop_h, crop_w), min(w, h) / min(crop_h, crop_w))
    return max(1, int(crop_h * scale + 0.5)), max(1, int(crop_w * scale + 0.5))


def sample_position(canvas_h, canvas_w, patch_h, patch_w, rng=random):
    """
    Uniformly random top-left corner of a patch inside a canvas, numpy's ``randint(0, C - p)``
    per axis as the release's ``CopyAndPaste.get_position_param``: the upper bound is excluded,
    so the patch never touches the canvas's right or bottom edge.

    Args:
        canvas_h, canvas_w (int): canvas size.
        patch_h, patch_w (int): patch size, smaller than the canvas size.
        rng: an object with ``randrange(a, b)`` (``b`` excluded), e.g. the ``random`` module.

    Returns:
        tuple[int, int]: (y0, x0) with ``0 <= y0 < canvas_h - patch_h``, same for x0.
    """
    if patch_h >= canvas_h or patch_w >= canvas_w:
        raise ValueError(
            f"A {patch_h}x{patch_w} patch does not fit strictly inside a {canvas_h}x{canvas_w} "
            "canvas (the paste position excludes the far edges, as the release)"
        )
    return rng.randrange(0, canvas_h - patch_h), rng.randrange(0, canvas_w - patch_w)


def paste(canvas, patch, y0, x0):
    """
    Paste a patch into a canvas, in place.

    Args:
        canvas (np.ndarray): (H, W, C), written in place.
        patch (np.ndarray): (h, w, C), same dtype; must lie inside the canvas at (y0, x0).
        y0, x0 (int): top-left corner of the patch in the canvas.

    Returns:
        list[int]: the pasted rectangle, XYXY in pixels: ``[x0, y0, x0 + w, y0 + h]``.
    """
    h, w = patch.shape[:2]
    if y0 < 0 or x0 < 0 or y0 + h > canvas.shape[0] or x0 + w > canvas.shape[1]:
        raise ValueError(
            f"A {h}x{w} patch at (y={y0}, x={x0}) leaves the {canvas.shape[0]}x{canvas.shape[1]} canvas"
        )
    canvas[y0 : y0 + h, x0 : x0 + w] = patch
    return [x0, y0, x0 + w, y0 + h]


@PRETRAIN_MAPPER_REGISTRY.register()
class InsLocCompositionMapper(TwoViewsMapper):
    """
    The views of InsLoc (Yang et al., "Instance Localization for Self-supervised Detection
    Pretraining", CVPR 2021). For each of the query and key views:

    1. a random crop of the dataset image (area ``crop_scale``, log-uniform ratio ``crop_ratio``,
       torchvision ``RandomResizedCrop`` semantics and fallback);
    2. rescaled, keeping its aspect ratio, by mmcv's ``imrescale`` rule (:func:`rescale_size`):
       its long side fits ``max(w, h)`` and its short side ``min(w, h)``, w and h drawn
       uniformly from ``[low, high)`` of ``paste_size_range``;
    3. pasted at a uniformly random position (far edges excluded) inside a random image of the
       dataset (drawn per view, with replacement, the foreground's own image included, as in the
       release), resized to ``background_size`` squared; the box is the pasted rectangle;
    4. flipped with its box and pixel-augmented (MoCo-v2), as every two-view mapper.

    Resizes are bilinear, as mmcv's in the release (``CopyAndPaste`` in limbo0000/InstanceLoc).

    With ``composition=False`` (the paper's ablation without composition) the crop itself,
    resized to ``background_size`` squared, is the view and its box is the whole view; no
    background is read.

    Each file is read and decoded once per call: the foreground for both crops (and for itself
    as a background), each background once (twice the same background is decoded and resized
    once); with ``draft_decode`` a JPEG decodes at 1/2, 1/4 or 1/8 of its size where its crops
    allow (:meth:`ImageFile.resized_crops`), the sampled geometry unchanged. A background that
    cannot be read is logged, added to ``unreadable_files`` (never drawn again by this mapper) and
    replaced by another.
    """

    @configurable
    def __init__(
        self,
        *,
        dataset_dicts,
        composition,
        crop_scale,
        crop_ratio,
        paste_size_range,
        background_size,
        image_format,
        pixel_aug,
        flip_prob,
        draft_decode=True,
    ):
        """
        Args:
            dataset_dicts (list[dict] or list[str]): the training images (dicts with
                "file_name", or file names): the pool of backgrounds.
            composition (bool): paste onto backgrounds (True) or use the crop as the view.
            crop_scale (tuple[float, float]): crop area range, as a fraction of the image.
            crop_ratio (tuple[float, float]): crop aspect-ratio range (log-uniform).
            paste_size_range (tuple[int, int]): (low, high): the integers w and h the crop is
                rescaled to are drawn from ``[low, high)``; ``high <= background_size``.
            background_size (int): side of the square views.
            image_format, pixel_aug, flip_prob, draft_decode: see :class:`TwoViewsMapper`.
        """
        super().__init__(
            image_format=image_format,
            pixel_aug=pixel_aug,
            flip_prob=flip_prob,
            draft_decode=draft_decode,
        )
        names = [d["file_name"] if isinstance(d, dict) else d for d in dataset_dicts]
        if not names:
            raise ValueError(
                "InsLocCompositionMapper needs a non-empty dataset for its backgrounds"
            )
        # Distinct files, so a file listed twice is no more likely as a background; serialized
        # as Detectron2 does its dataset lists, so that loader workers do not copy them on read.
        self.background_files = DatasetFromList(list(dict.fromkeys(names)), copy=False)
        self.composition = bool(composition)
        self.crop_scale = check_range("INSLOC.CROP_SCALE", crop_scale, high=1.0)
        self.crop_ratio = check_range("INSLOC.CROP_RATIO", crop_ratio)
        if background_size < 1:
            raise ValueError(f"INSLOC.BACKGROUND_SIZE={background_size} must be positive")
        self.background_size = int(background_size)
        if any(int(v) != v for v in paste_size_range):
            raise ValueError(f"INSLOC.PASTE_SIZE_RANGE={tuple(paste_size_range)} must be integers")
        self.paste_size_range = check_range(
            "INSLOC.PASTE_SIZE_RANGE", [int(v) for v in paste_size_range], high=self.background_size
        )
        low, high = self.paste_size_range
        if low == high == self.background_size:
            raise ValueError(
                f"INSLOC.PASTE_SIZE_RANGE={self.paste_size_range}: a paste of the whole "
                f"INSLOC.BACKGROUND_SIZE {self.background_size} leaves no room for its position"
            )

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        if dataset_dicts is None:
            dataset_dicts = get_pretrain_dicts(cfg)
        return {
            "dataset_dicts": dataset_dicts,
            "composition": cfg.INSLOC.COMPOSITION,
            "crop_scale": tuple(cfg.INSLOC.CROP_SCALE),
            "crop_ratio": tuple(cfg.INSLOC.CROP_RATIO),
            "paste_size_range": tuple(cfg.INSLOC.PASTE_SIZE_RANGE),
            "background_size": cfg.INSLOC.BACKGROUND_SIZE,
            **cls._base_config(cfg, is_train),
        }

    def sample_background_file(self, foreground):
        """
        Args:
            foreground (str): file name of the dataset image being composed.

        Returns:
            str: a uniformly random dataset file not known to be unreadable, the foreground
            included (the release draws each background with numpy ``randint(0, len(data))``
            over the whole dataset); ``foreground`` itself when no such file is left.
        """
        files = self.background_files
        excluded = self.unreadable_files
        # Excluded names are dataset files: below the count, a candidate is left.
        if len(excluded) >= len(files):
            return foreground
        while True:  # rejection sampling, terminates
            name = files[random.randrange(len(files))]
            if name not in excluded:
                return name

    def _read_background(self, foreground, cache):
        """
        A background resized to the view size (from ``cache`` if this call read it already), or
        the marker ``_OWN_IMAGE`` when the dataset image itself is drawn (it is resized with its
        crops, from the same decode).
        """
        s = self.background_size
        while True:
            name = self.sample_background_file(foreground)
            if name == foreground:
                return _OWN_IMAGE
            if name in cache:
                return cache[name]
            image = self.open(name, skip=False)
            if image is None:
                continue
            try:
                (cache[name],) = self.resized_crops(
                    image, [(0, 0, *image.shape)], [(s, s)], resize=resize_bilinear
                )
            except CorruptImageError as e:
                self.unreadable(e, skip=False)
                continue
            return cache[name]

    def sample_composition(self, height, width):
        """
        The geometry of one composed view (before its background is known).

        Args:
            height, width (int): size of the dataset image.

        Returns:
            tuple: the crop (y, x, h, w) in the dataset image, the (h, w) it is resized to, and
            the (y0, x0) where it is pasted (None without composition).
        """
        y, x, h, w = sample_crop(height, width, self.crop_scale, self.crop_ratio)
        s = self.background_size
        if not self.composition:
            return (y, x, h, w), (s, s), None
        new_h, new_w = rescale_size(h, w, *sample_paste_size(self.paste_size_range))
        return (y, x, h, w), (new_h, new_w), sample_position(s, s, new_h, new_w)

    def make_views(self, image, dataset_dict):
        """
        For each view: the background drawn (and decoded, resized), then the crop, its paste
        size and position, the draws of the release in its order; then the dataset image is
        decoded once for both crops (and for itself as a background, if drawn), at the largest
        JPEG reduction they all allow; then each view is composed, flipped and augmented.
        """
        foreground = dataset_dict["file_name"]
        s = self.background_size
        cache, backgrounds, plans = {}, [], []
        for _ in range(2):
            if self.composition:
                backgrounds.append(self._read_background(foreground, cache))
            plans.append(self.sample_composition(*image.shape))
        crops = [crop for crop, _, _ in plans]
        sizes = [size for _, size, _ in plans]
        if any(b is _OWN_IMAGE for b in backgrounds):
            crops.append((0, 0, *image.shape))
            sizes.append((s, s))
        patches = self.resized_crops(image, crops, sizes, resize=resize_bilinear)
        views = []
        for i, (_, _, position) in enumerate(plans):
            if position is None:
                views.append(self.make_view(patches[i], [0, 0, s, s]))
                continue
            background = patches[-1] if backgrounds[i] is _OWN_IMAGE else backgrounds[i]
            canvas = background.copy()
            box = paste(canvas, patches[i], *position)
            views.append(self.make_view(canvas, box))
        return views
