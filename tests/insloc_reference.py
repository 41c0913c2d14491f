"""
Reference samplers written for the tests from the rules of the official InsLoc release
(limbo0000/InstanceLoc, mmdet on mmcv 0.6.1), independently of detpre's code:

* ``CopyAndPaste`` (mmdet/datasets/pipelines/copy_and_paste.py): crop of area U(0.2, 1) and
  log-uniform ratio in (0.5, 2) (10 tries, then a central crop); w and h drawn with numpy
  ``randint(128, 255)``; mmcv ``imrescale(crop, (w, h))``: scale
  ``min(max(w, h) / long, min(w, h) / short)``, each side ``int(side * scale + 0.5)``; top-left
  corner numpy ``randint(0, 256 - side)`` per axis;
* ``AnchorAugHead.get_fixed_bboxes`` (mmdet/models/dense_heads/anchor_aug.py) with the config's
  ``rpn_proposal`` (configs/FPN/insloc_fpn_200ep.py): anchors of the stride-16 level, scales
  2, 4, 8, 16 (32-256 px), ratios 0.5-2; candidates with IoU > 0.5, else the 4000 best by IoU;
  uniform random scores, NMS at 0.7, one kept box drawn uniformly (``get_stage2_bboxes``).
"""

import itertools
import math

import numpy as np

__all__ = [
    "FOREGROUND_SIZES",
    "ks_statistic",
    "release_anchors",
    "release_crop",
    "release_jitter",
    "release_paste_box",
    "iou_one_to_many",
]

# (height, width) of 12 foreground images, ImageNet-like shapes of both orientations.
FOREGROUND_SIZES = (
    (375, 500),
    (500, 375),
    (333, 500),
    (500, 333),
    (480, 640),
    (640, 480),
    (256, 256),
    (500, 500),
    (300, 450),
    (1024, 768),
    (200, 300),
    (600, 800),
)


def release_crop(height, width, rng, scale=(0.2, 1.0), ratio=(0.5, 2.0)):
    """``CopyAndPaste.get_rescale_param``: returns the crop's (h, w)."""
    area = height * width
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        tw = int(round(math.sqrt(target_area * aspect)))
        th = int(round(math.sqrt(target_area / aspect)))
        if 0 < tw <= width and 0 < th <= height:
            return th, tw
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def release_paste_box(height, width, rng, base=256, size_range=(128, 255)):
    """
    One pasted box of the release's composition for a (height, width) foreground.

    Args:
        rng (np.random.Generator): all draws.
        base (int): background side; size_range: ``fore_scale``.

    Returns:
        list[int]: XYXY box in the view.
    """
    ch, cw = release_crop(height, width, rng)
    w = int(rng.integers(*size_range))  # numpy randint(low, high): high excluded
    h = int(rng.integers(*size_range))
    scale = min(max(w, h) / max(ch, cw), min(w, h) / min(ch, cw))
    nw, nh = int(cw * scale + 0.5), int(ch * scale + 0.5)
    y0 = int(rng.integers(0, base - nh))
    x0 = int(rng.integers(0, base - nw))
    return [x0, y0, x0 + nw, y0 + nh]


def release_anchors(h, w, stride=16, scales=(2, 4, 8, 16), ratios=(0.5, 0.75, 1.0, 1.5, 2.0)):
    """mmdet's AnchorGenerator (center offset 0): base size = stride, h / w = ratio."""
    out = []
    for y, x in itertools.product(range(math.ceil(h / stride)), range(math.ceil(w / stride))):
        for r, s in itertools.product(ratios, scales):
            hr = math.sqrt(r)
            aw, ah = stride * s / hr, stride * s * hr
            cx, cy = x * stride, y * stride
            out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return np.array(out)


def iou_one_to_many(a, b):
    """IoU of one XYXY box a (4,) with boxes b (M, 4)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def release_jitter(box, anchors, rng, iou_thr=0.5, nms_thr=0.7, nms_pre=4000):
    """The release's query box augmentation of one box; greedy NMS written out."""
    ious = iou_one_to_many(np.asarray(box, dtype=np.float64), anchors)
    if (ious > iou_thr).any():
        cand = anchors[ious > iou_thr]
    else:
        cand = anchors[np.argsort(-ious, kind="stable")[:nms_pre]]
    scores = rng.random(len(cand))
    suppressed = np.zeros(len(cand), bool)
    kept = []
    for i in np.argsort(-scores):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= iou_one_to_many(cand[i], cand) > nms_thr
    return cand[kept[int(rng.integers(len(kept)))]]


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: sup |F_a - F_b| over the pooled values."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())
