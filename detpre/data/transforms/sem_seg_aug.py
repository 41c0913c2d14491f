"""
The training augmentation of mmseg's segmentation configs (Resize with a ratio range, RandomCrop
with ``cat_max_ratio``, RandomFlip, PhotoMetricDistortion) from Detectron2's augmentations.
"""

import cv2
import numpy as np
from detectron2.data import transforms as T
from PIL import Image

__all__ = [
    "CategoryAreaRandomCrop",
    "PhotoMetricDistortion",
    "RandomRatioResize",
    "build_sem_seg_augmentation",
]


class RandomRatioResize(T.Augmentation):
    """
    mmseg's ``Resize(img_scale=(long, short), ratio_range=(lo, hi), keep_ratio=True)``: draw r
    uniformly in [lo, hi], then scale the image (bilinear; labels nearest) so that its short side
    is ``int(short * r)`` unless its long side would pass ``int(long * r)`` (then the long side is
    that).
    """

    def __init__(self, short, long, ratio_range, interp=Image.BILINEAR):
        """
        Args:
            short (int): the short side at ratio 1 (512 for ADE20K / VOC, 1024 for Cityscapes).
            long (int): the long side's bound at ratio 1 (2048).
            ratio_range (tuple[float, float]): (lo, hi).
            interp: PIL interpolation of the image.
        """
        super().__init__()
        lo, hi = ratio_range
        if not 0 < lo <= hi:
            raise ValueError(f"SEMSEG.RESIZE_RATIO_RANGE must be 0 < lo <= hi, got {ratio_range}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        r = np.random.uniform(*self.ratio_range)
        # mmseg's random_sample_ratio truncates the scaled sizes; mmcv's rescale_size then takes
        # the one factor that fits both bounds and rounds each side (in this order of float
        # operations, so that .5 ties fall as mmcv's).
        short, long = int(self.short * r), int(self.long * r)
        factor = min(long / max(h, w), short / min(h, w))
        new_w, new_h = int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


class CategoryAreaRandomCrop(T.RandomCrop_CategoryAreaConstraint):
    """
    mmseg's ``RandomCrop(crop_size, cat_max_ratio)`` on Detectron2's category-area crop: up to 10
    crop boxes are drawn (y offset, then x) until no class covers ``single_category_max_area`` of
    the box's labelled pixels; when all 10 fail, mmseg takes an 11th box unchecked, where
    Detectron2 keeps the 10th.
    """

    def get_transform(self, image, sem_seg):
        if self.crop_aug.crop_type != "absolute" or self.single_category_max_area >= 1.0:
            return super().get_transform(image, sem_seg)
        h, w = sem_seg.shape
        crop_h, crop_w = self.crop_aug.get_crop_size((h, w))

        def draw():
            return np.random.randint(h - crop_h + 1), np.random.randint(w - crop_w + 1)

        y0, x0 = draw()
        for _ in range(10):
            labels, cnt = np.unique(sem_seg[y0 : y0 + crop_h, x0 : x0 + crop_w], return_counts=True)
            if self.ignored_category is not None:
                cnt = cnt[labels != self.ignored_category]
            if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < self.single_category_max_area:
                break
            y0, x0 = draw()
        return T.CropTransform(x0, y0, crop_w, crop_h)


def photometric_distortion(image, params):
    """
    Apply mmseg's PhotoMetricDistortion with drawn parameters.

    Args:
        image (ndarray): (H, W, 3) uint8, RGB or BGR (hue and saturation are computed in the
            matching order).
        params (dict): ``brightness`` (additive delta or None), ``contrast`` (factor or None),
            ``contrast_first`` (bool), ``saturation`` (factor or None), ``hue`` (delta in OpenCV's
            0-179 hue units, or None), ``bgr`` (bool).

    Returns:
        ndarray: (H, W, 3) uint8.
    """

    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    to_hsv, from_hsv = (
        (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
        if params["bgr"]
        else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
    )
    img = np.ascontiguousarray(image)
    if params["brightness"] is not None:
        img = convert(img, beta=params["brightness"])
    if params["contrast_first"] and params["contrast"] is not None:
        img = convert(img, alpha=params["contrast"])
    if params["saturation"] is not None:
        hsv = cv2.cvtColor(img, to_hsv)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=params["saturation"])
        img = cv2.cvtColor(hsv, from_hsv)
    if params["hue"] is not None:
        hsv = cv2.cvtColor(img, to_hsv)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + params["hue"]) % 180
        img = cv2.cvtColor(hsv, from_hsv)
    if not params["contrast_first"] and params["contrast"] is not None:
        img = convert(img, alpha=params["contrast"])
    return img


class PhotoMetricDistortion(T.Augmentation):
    """
    mmseg's ``PhotoMetricDistortion``: each with probability 1/2, a brightness delta in
    [-32, 32], a contrast factor in [0.5, 1.5] (before or after the rest, with probability 1/2
    each), a saturation factor in [0.5, 1.5] and a hue shift in [-18, 18) OpenCV units, on uint8
    pixels clipped after each step. Labels are untouched.
    """

    def __init__(
        self,
        brightness_delta=32,
        contrast_range=(0.5, 1.5),
        saturation_range=(0.5, 1.5),
        hue_delta=18,
        image_format="RGB",
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"PhotoMetricDistortion takes (H, W, 3) uint8 images, got {image.dtype} "
                f"{image.shape}"
            )

        def coin():
            return np.random.randint(2) == 1

        def maybe(draw):
            return draw() if coin() else None

        # mmseg's order of draws: brightness, the contrast mode, contrast (mode 1), saturation,
        # hue, contrast (mode 0); the same seed gives mmseg's parameters.
        params = {"bgr": self.image_format == "BGR", "contrast": None}
        delta = self.brightness_delta
        params["brightness"] = maybe(lambda: np.random.uniform(-delta, delta))
        params["contrast_first"] = coin()
        if params["contrast_first"]:
            params["contrast"] = maybe(lambda: np.random.uniform(*self.contrast_range))
        params["saturation"] = maybe(lambda: np.random.uniform(*self.saturation_range))
        params["hue"] = maybe(lambda: np.random.randint(-self.hue_delta, self.hue_delta))
        if not params["contrast_first"]:
            params["contrast"] = maybe(lambda: np.random.uniform(*self.contrast_range))
        return T.ColorTransform(lambda img: photometric_distortion(img, params))


def build_sem_seg_augmentation(cfg, is_train):
    """
    Training: :class:`RandomRatioResize` (``SEMSEG.TRAIN_SCALE``, ``SEMSEG.RESIZE_RATIO_RANGE``),
    :class:`CategoryAreaRandomCrop` (``INPUT.CROP``, with ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` as
    mmseg's ``cat_max_ratio``), a horizontal flip and,
    with ``SEMSEG.PHOTOMETRIC_DISTORTION``, :class:`PhotoMetricDistortion`, in mmseg's order.
    Inference: the short side to ``INPUT.MIN_SIZE_TEST``, the long one at most
    ``INPUT.MAX_SIZE_TEST`` (mmseg's keep-ratio test resize).

    Args:
        cfg (CfgNode): the segmentation config.
        is_train (bool): training or inference.

    Returns:
        list[Augmentation]
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    short, long = cfg.SEMSEG.TRAIN_SCALE
    augs = [RandomRatioResize(short, long, tuple(cfg.SEMSEG.RESIZE_RATIO_RANGE))]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            CategoryAreaRandomCrop(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    augs.append(T.RandomFlip())
    if cfg.SEMSEG.PHOTOMETRIC_DISTORTION:
        augs.append(PhotoMetricDistortion(image_format=cfg.INPUT.FORMAT))
    return augs
