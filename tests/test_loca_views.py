"""
LOCA's views: sizes, crop areas and flips as configured, the recorded geometry matching the
pixels (on an image whose pixels encode their own coordinates), and the position targets derived
from that geometry matching the ones read off the pixels.
"""

import glob
import math
import os
import random

import cv2
import numpy as np
import pytest
import torch

from detpre.data.mappers import LocaViewsMapper
from detpre.data.transforms.crops import sample_crop, sample_distorted_crop
from detpre.engine import get_detpre_cfg
from detpre.modeling.loca.patch_positions import patch_position_targets

H, W = 160, 200  # coordinates fit in uint8


def _identity(image):
    return image


def _geometry_mapper(**kwargs):
    args = dict(
        reference_size=224,
        reference_scale=(0.32, 1.0),
        reference_flip_prob=0.5,
        query_size=224,
        query_scale=(0.32, 1.0),
        num_focal_queries=9,
        focal_size=96,
        focal_scale=(0.05, 0.32),
        crop_ratio=(3 / 4, 4 / 3),
        query_flip_prob=0.5,
        reference_aug=_identity,
        query_aug=_identity,
        focal_aug=_identity,
        image_format="RGB",
    )
    args.update(kwargs)
    return LocaViewsMapper(**args)


@pytest.fixture(scope="module")
def coordinate_image(tmp_path_factory):
    """R = x, G = y of every pixel (lossless PNG)."""
    ys, xs = np.mgrid[0:H, 0:W]
    rgb = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    path = str(tmp_path_factory.mktemp("loca") / "coords.png")
    cv2.imwrite(path, rgb[:, :, ::-1])
    return path


def _cfg():
    cfg = get_detpre_cfg()
    cfg.SSL.MAPPER = "LocaViewsMapper"
    return cfg


def test_views_from_config(datasets_root):
    torch.manual_seed(0)
    mapper = LocaViewsMapper(_cfg(), is_train=True)
    assert mapper.num_views == 11
    # the release's colour augmentation per view: solarize 0 / 0.2 / 0; no blur (its config puts
    # the probabilities 1.0 / 0.1 / 0.5 in random_blur's height argument: a one-tap kernel)
    ref_aug, query_aug, focal_aug = (spec[3] for spec in mapper.specs[:3])
    assert [a.pixel_aug.blur_prob for a in (ref_aug, query_aug, focal_aug)] == [0.0, 0.0, 0.0]
    intended = _cfg()
    intended.LOCA.RELEASE_BLUR = False
    specs = LocaViewsMapper(intended, is_train=True).specs[:3]
    assert [spec[3].pixel_aug.blur_prob for spec in specs] == [1.0, 0.1, 0.5]
    assert [a.solarize_prob for a in (ref_aug, query_aug, focal_aug)] == [0.0, 0.2, 0.0]
    assert ref_aug.pixel_aug.color_jitter_prob == 0.8 and ref_aug.pixel_aug.grayscale_prob == 0.2
    files = sorted(glob.glob(os.path.join(datasets_root, "imagenet_sample", "images", "*.JPEG")))[
        :4
    ]
    flips = []
    for f in files:
        out = mapper({"file_name": f, "image_id": 1})
        height, width = cv2.imread(f).shape[:2]
        views = out["views"]
        assert len(views) == 11 and out["file_name"] == f
        for i, v in enumerate(views):
            side = 224 if i < 2 else 96
            assert v["image"].shape == (3, side, side) and v["image"].dtype == torch.uint8
            assert sorted(v) == ["crop_box", "flipped", "image"]
            x0, y0, x1, y1 = v["crop_box"].tolist()
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            area = (x1 - x0) * (y1 - y0) / (width * height)
            low, high = (0.32, 1.0) if i < 2 else (0.05, 0.32)
            assert low - 0.02 <= area <= high + 0.02, (i, area)
        assert views[0]["flipped"] is False  # the reference is never flipped
        flips += [v["flipped"] for v in views[1:]]
    assert any(flips) and not all(flips)


def _affine(view, axis):
    """Fit original pixel index = a * view coordinate + b along one axis, from the pixels."""
    img = view["image"].double()
    values = img[0].mean(dim=0) if axis == "x" else img[1].mean(dim=1)
    coords = torch.arange(len(values), dtype=torch.float64) + 0.5
    a = torch.stack([coords, torch.ones_like(coords)], dim=1)[2:-2]
    sol = torch.linalg.lstsq(a, values[2:-2, None]).solution[:, 0]
    return float(sol[0]), float(sol[1])


def test_recorded_geometry_matches_pixels(coordinate_image):
    torch.manual_seed(1)
    random.seed(1)
    mapper = _geometry_mapper()
    for _ in range(4):
        for v in mapper({"file_name": coordinate_image})["views"]:
            side = v["image"].shape[-1]
            x0, y0, x1, y1 = v["crop_box"].tolist()
            u = (torch.arange(side, dtype=torch.float64) + 0.5) / side
            if v["flipped"]:
                u = 1 - u
            # pixel k covers [k, k + 1): a continuous coordinate c lies in pixel value c - 0.5
            expected_x = x0 + u * (x1 - x0) - 0.5
            expected_y = (
                y0 + (torch.arange(side, dtype=torch.float64) + 0.5) / side * (y1 - y0) - 0.5
            )
            img = v["image"].double()
            assert (img[0] - expected_x[None, :]).abs().max() <= 1.01
            assert (img[1] - expected_y[:, None]).abs().max() <= 1.01


def test_position_targets_match_pixels(coordinate_image):
    """Each query cell's centre, located in the reference through the pixels alone."""
    torch.manual_seed(2)
    random.seed(2)  # the flips; the crops come from torch
    mapper = _geometry_mapper()
    compared, outside = 0, 0
    for _ in range(6):
        views = mapper({"file_name": coordinate_image})["views"]
        ref = views[0]
        ref_side = ref["image"].shape[-1]
        (rax, rbx), (ray, rby) = _affine(ref, "x"), _affine(ref, "y")
        for q in views[1:]:
            side = q["image"].shape[-1]
            grid = side // 16
            targets = patch_position_targets(
                q["crop_box"][None], [q["flipped"]], (grid, grid),
                ref["crop_box"][None], [ref["flipped"]], (14, 14),
            )[0]  # fmt: skip
            (qax, qbx), (qay, qby) = _affine(q, "x"), _affine(q, "y")
            for i in range(grid):
                for j in range(grid):
                    cx, cy = (j + 0.5) * 16, (i + 0.5) * 16
                    # query view -> original pixel index -> reference view coordinate
                    rx = (qax * cx + qbx - rbx) / rax
                    ry = (qay * cy + qby - rby) / ray
                    col, row = rx / ref_side * 14, ry / ref_side * 14
                    if min(abs(col - round(col)), abs(row - round(row))) < 0.2:
                        continue  # within a fifth of a cell of a border: either side will do
                    inside = 0 <= col < 14 and 0 <= row < 14
                    expected = math.floor(row) * 14 + math.floor(col) if inside else -1
                    assert int(targets[i * grid + j]) == expected
                    compared += 1
                    outside += not inside
    assert compared > 1000 and 0 < outside < compared


def test_unreadable_image_is_skipped(tmp_path):
    mapper = _geometry_mapper()
    assert mapper({"file_name": str(tmp_path / "missing.jpg")}) is None
    assert mapper.num_skipped == 1


def test_bad_config():
    cfg = _cfg()
    cfg.LOCA.BLUR_PROB = (1.0, 0.1)
    with pytest.raises(ValueError, match="LOCA.BLUR_PROB"):
        LocaViewsMapper(cfg, is_train=True)
    cfg = _cfg()
    cfg.LOCA.FOCAL_SCALE = (0.5, 0.2)
    with pytest.raises(ValueError, match="LOCA.FOCAL_SCALE"):
        LocaViewsMapper(cfg, is_train=True)
    with pytest.raises(ValueError, match="training views only"):
        LocaViewsMapper(_cfg(), is_train=False)


# Figures measured with TensorFlow 2.21's tf.image.sample_distorted_bounding_box (the release's
# crop op, called as LOCA's ops.py calls it: no boxes, min_object_covered 0, aspect ratio range
# (3/4, 4/3), 100 attempts), 20000 crops each of a 375 x 500 (h x w) image: mean, 10 % and 90 %
# quantiles of the area fraction, and the 10 % / 90 % quantiles of the aspect ratio w / h.
TF_FIGURES = {
    (0.32, 1.0): {"area": (0.5331, 0.3530, 0.7551), "ratio": (0.8078, 1.2734)},
    (0.05, 0.32): {"area": (0.1652, 0.0657, 0.2838), "ratio": (0.8069, 1.2708)},
}


@pytest.mark.parametrize("scale", sorted(TF_FIGURES))
def test_crops_are_drawn_as_tensorflow_draws_them(scale):
    rng = random.Random(0)
    crops = np.array(
        [sample_distorted_crop(375, 500, scale, (3 / 4, 4 / 3), rng) for _ in range(20000)]
    )
    y, x, h, w = crops.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 375).all() and (x + w <= 500).all()
    area, ratio = h * w / (375 * 500), w / h
    assert ((area >= scale[0]) & (area <= scale[1])).all()
    mean, q10, q90 = TF_FIGURES[scale]["area"]
    # Standard errors at 20000 crops: ~0.001 for the mean, ~0.003 for the quantiles.
    assert area.mean() == pytest.approx(mean, abs=0.004)
    assert np.quantile(area, [0.1, 0.9]) == pytest.approx([q10, q90], abs=0.01)
    assert np.quantile(ratio, [0.1, 0.9]) == pytest.approx(TF_FIGURES[scale]["ratio"], abs=0.01)
    # RandomResizedCrop's rule draws larger crops (area uniform): its mean is off by > 0.02.
    other = np.array([sample_crop(375, 500, scale, (3 / 4, 4 / 3), rng) for _ in range(20000)])
    assert abs((other[:, 2] * other[:, 3]).mean() / (375 * 500) - mean) > 0.02


def test_tensorflow_crop_offsets_and_fallback():
    rng = random.Random(1)
    # TF draws the offset in [0, H - h): a crop shorter than the image never reaches its bottom.
    crops = [sample_distorted_crop(40, 60, (0.3, 0.6), (3 / 4, 4 / 3), rng) for _ in range(3000)]
    assert all((y + h < 40 or h == 40) and (x + w < 60 or w == 60) for y, x, h, w in crops)
    shorter = [(y, h) for y, _, h, _ in crops if h < 40]
    assert min(y for y, _ in shorter) == 0 and max(y + h for y, h in shorter) == 39
    # No crop of 90-100 % of a 10 x 100 strip has an aspect ratio in (3/4, 4/3): the whole image.
    assert sample_distorted_crop(10, 100, (0.9, 1.0), (3 / 4, 4 / 3), rng) == (0, 0, 10, 100)
    with pytest.raises(ValueError, match="LOCA.CROP_RULE"):
        cfg = _cfg()
        cfg.LOCA.CROP_RULE = "pil"
        LocaViewsMapper(cfg, is_train=True)
