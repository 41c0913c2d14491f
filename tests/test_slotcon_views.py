import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog

import detpre.data.mappers.slotcon as slotcon_views
from detpre.data.build import build_pretrain_mapper
from detpre.data.image_io import read_image
from detpre.data.mappers.slotcon import SlotConViewsMapper, sample_overlapping_crop
from detpre.engine import get_detpre_cfg


class ScriptedRng:
    """``random``-like: uniform(a, b) = a + t (b - a) and randint(a, b) take scripted values."""

    def __init__(self, ts, ints):
        self.ts, self.ints = list(ts), list(ints)

    def uniform(self, a, b):
        return a + self.ts.pop(0) * (b - a)

    def randint(self, a, b):
        value = self.ints.pop(0)
        assert a <= value <= b
        return value


def _cfg(repo_root, size=64, flip=0.0, aug=False, **slotcon):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs/pretrain/slotcon_R50_C4_cpu_coco.yaml"))
    cfg.SLOTCON.CROP_SIZE = size
    cfg.INPUT.SSL_AUG.FLIP_PROB = flip
    # Full-size decodes: the pixel checks are the release's rule (draft decoding is checked
    # against full-size decodes in tests/test_image_file.py).
    cfg.INPUT.SSL_AUG.DRAFT_DECODE = False
    if not aug:
        cfg.SLOTCON.COLOR_JITTER_PROB = cfg.SLOTCON.GRAYSCALE_PROB = 0.0
        cfg.SLOTCON.BLUR_PROB = (0.0, 0.0)
        cfg.SLOTCON.SOLARIZE_PROB = (0.0, 0.0)
    for k, v in slotcon.items():
        cfg.SLOTCON[k] = v
    return cfg


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(scope="module")
def dicts(datasets_root):
    return DatasetCatalog.get("coco_tiny_train")[:4]


def _area_inside(box, other):
    """Fraction of XYXY ``box``'s area inside ``other``."""
    w = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    h = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    return w * h / ((box[2] - box[0]) * (box[3] - box[1]))


def test_second_crop_redrawn_until_one_percent_inside_first():
    # 100 x 100 image, area 9% at ratio 1 (t 0.5 of the log range): 30 x 30 crops.
    t_area = (0.09 - 0.08) / (1.0 - 0.08)
    reference = (0, 0, 30, 30)
    rng = ScriptedRng([t_area, 0.5] * 3, [70, 70, 29, 29, 27, 27])
    # draw 1: no overlap; draw 2: 1 px of 900 (< 1%); draw 3: 9 px of 900 (= 1%).
    crop = sample_overlapping_crop(100, 100, (0.08, 1.0), (0.75, 4 / 3), reference, rng=rng)
    assert crop == (27, 27, 30, 30)
    assert rng.ts == [] and rng.ints == []


def test_fallback_after_the_tries_is_an_unconstrained_crop():
    t_area = (0.09 - 0.08) / (1.0 - 0.08)
    # two failed draws, then sample_crop's first draw is taken as it is (it fits, no overlap)
    rng = ScriptedRng([t_area, 0.5] * 3, [70, 70, 60, 60, 65, 66])
    crop = sample_overlapping_crop(
        100, 100, (0.08, 1.0), (0.75, 4 / 3), (0, 0, 30, 30), tries=2, rng=rng
    )
    assert crop == (65, 66, 30, 30)


def test_views_record_crops_in_the_image_and_overlap(repo_root, dicts):
    mapper = build_pretrain_mapper(_cfg(repo_root, flip=0.5, aug=True), dicts)
    assert isinstance(mapper, SlotConViewsMapper)
    _seed(0)
    flips = []
    for _ in range(5):
        for d in dicts:
            out = mapper(d)
            assert out["file_name"] == d["file_name"] and len(out["views"]) == 2
            boxes = []
            for view in out["views"]:
                assert view["image"].dtype == torch.uint8 and view["image"].shape == (3, 64, 64)
                assert sorted(view) == ["crop_box", "flipped", "image"]
                x0, y0, x1, y1 = view["crop_box"].tolist()
                assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
                flips.append(view["flipped"])
                boxes.append((x0, y0, x1, y1))
            assert _area_inside(boxes[1], boxes[0]) >= 0.01
    assert 0 < sum(flips) < len(flips)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_view_is_the_resized_crop_flipped_as_recorded(repo_root, dicts, flip):
    mapper = SlotConViewsMapper(_cfg(repo_root, flip=flip))
    _seed(1)
    out = mapper(dicts[0])
    image = torch.from_numpy(np.array(read_image(dicts[0]["file_name"], format="RGB")))
    image = image.permute(2, 0, 1)
    for view in out["views"]:
        assert view["flipped"] is bool(flip)
        x0, y0, x1, y1 = [int(v) for v in view["crop_box"].tolist()]
        crop = image[None, :, y0:y1, x0:x1].float()
        ref = F.interpolate(crop, size=(64, 64), mode="bilinear", antialias=True)[0]
        got = view["image"].float()
        as_recorded = (got - (ref.flip(-1) if flip else ref)).abs().mean()
        other = (got - (ref if flip else ref.flip(-1))).abs().mean()
        assert as_recorded < 6.0 and as_recorded < other / 2


def _reference_views(out, file_name, size):
    image = read_image(file_name, format="RGB")
    refs = []
    for view in out["views"]:
        x0, y0, x1, y1 = [int(v) for v in view["crop_box"].tolist()]
        crop = slotcon_views._resize(image[y0:y1, x0:x1], size, size)
        refs.append(torch.from_numpy(crop).permute(2, 0, 1))
    return refs


def test_asymmetric_blur_and_solarization(repo_root, dicts):
    # view 1: always blurred, never solarized; view 2: never blurred, always solarized
    cfg = _cfg(repo_root, BLUR_PROB=(1.0, 0.0), SOLARIZE_PROB=(0.0, 1.0))
    mapper = SlotConViewsMapper(cfg)
    _seed(2)
    out = mapper(dicts[1])
    ref1, ref2 = _reference_views(out, dicts[1]["file_name"], 64)
    solarized = torch.where(ref2 >= 128, 255 - ref2, ref2)
    assert torch.equal(out["views"][1]["image"], solarized)
    blurred = out["views"][0]["image"].float()
    assert not torch.equal(out["views"][0]["image"], ref1)

    def roughness(x):
        return (x[:, :, 1:] - x[:, :, :-1]).abs().mean()

    assert roughness(blurred) < roughness(ref1.float())
    # with neither, both views are the plain resized crops
    mapper = SlotConViewsMapper(_cfg(repo_root))
    out = mapper(dicts[1])
    refs = _reference_views(out, dicts[1]["file_name"], 64)
    for view, ref in zip(out["views"], refs):
        assert torch.equal(view["image"], ref)


def test_published_augmentation_defaults(repo_root):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs/pretrain/slotcon_R50_C4_800ep_coco.yaml"))
    mapper = SlotConViewsMapper(cfg)
    assert mapper.crop_size == 224 and mapper.crop_scale == (0.08, 1.0)
    pixel_augs = [a.pixel_aug for a in mapper.view_augs]
    assert [a.blur_prob for a in pixel_augs] == [1.0, 0.1]
    assert [a.solarize_prob for a in mapper.view_augs] == [0.0, 0.2]
    assert all(a.color_jitter_prob == 0.8 and a.grayscale_prob == 0.2 for a in pixel_augs)


def test_unreadable_image_is_skipped(repo_root, tmp_path):
    mapper = SlotConViewsMapper(_cfg(repo_root))
    assert mapper({"file_name": str(tmp_path / "missing.jpg"), "image_id": 1}) is None
    assert mapper.num_skipped == 1


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("CROP_SCALE", (0.0, 1.0), "SLOTCON.CROP_SCALE"),
        ("SOLARIZE_PROB", (1.5, 0.0), "SLOTCON.SOLARIZE_PROB"),
        ("BLUR_PROB", (1.0,), "SLOTCON.BLUR_PROB"),
        ("COLOR_JITTER_PROB", 1.5, "SLOTCON.COLOR_JITTER_PROB"),
        ("BLUR_SIGMA", (2.0, 1.0), "SLOTCON.BLUR_SIGMA"),
        ("MIN_OVERLAP", 2.0, "SLOTCON.MIN_OVERLAP"),
        ("CROP_SIZE", 0, "SLOTCON.CROP_SIZE"),
    ],
)
def test_bad_config_names_the_key(repo_root, key, value, match):
    with pytest.raises(ValueError, match=match):
        SlotConViewsMapper(_cfg(repo_root, **{key: value}))
