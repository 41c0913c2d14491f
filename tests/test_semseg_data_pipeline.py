"""
The training data of configs/semseg: mmseg's ratio-range resize and PhotoMetricDistortion, and
SemSegDatasetMapper on small image / label files, each against its rule written out here.
"""

import colorsys
import re

import numpy as np
import pytest
from detectron2.data import transforms as T
from PIL import Image

from detpre.data.mappers.sem_seg import SemSegDatasetMapper
from detpre.data.sem_seg_io import SemSegLabelError
from detpre.data.transforms import sem_seg_aug
from detpre.data.transforms.sem_seg_aug import (
    CategoryAreaRandomCrop,
    PhotoMetricDistortion,
    RandomRatioResize,
    build_sem_seg_augmentation,
    photometric_distortion,
)

SEMANTIC_FPN = "configs/semseg/semantic_fpn_R50_FPN_cpu_coco_sem_seg.yaml"
IGNORE = 255

# ------------------------------------------------------------------------------------------------
# RandomRatioResize


def mmcv_rescale(h, w, short, long, ratio):
    """mmcv's rescale_size with keep_ratio: the scale factor is the largest that keeps the long
    side within long * r and the short side within short * r; sides rounded half up."""
    scale = min(long * ratio / max(h, w), short * ratio / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resized_shape(aug, h, w):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    aug_input = T.AugInput(image, sem_seg=np.zeros((h, w), dtype=np.uint8))
    aug(aug_input)
    assert aug_input.sem_seg.shape == aug_input.image.shape[:2]
    return aug_input.image.shape[:2]


SIZES = [(480, 640), (640, 480), (375, 500), (500, 375), (100, 1000), (1000, 100), (333, 333)]


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("ratio", [0.5, 0.75, 1.0, 1.5, 2.0])
def test_fixed_ratio_resize_is_mmcvs_rescale(h, w, ratio):
    aug = RandomRatioResize(512, 2048, (ratio, ratio))
    assert resized_shape(aug, h, w) == mmcv_rescale(h, w, 512, 2048, ratio)


@pytest.mark.parametrize("h, w", [(480, 640), (1000, 100), (40, 56)])
def test_drawn_ratio_resize(monkeypatch, h, w):
    drawn = []

    def uniform(lo, hi):
        drawn.append((lo, hi))
        return 1.25

    monkeypatch.setattr(np.random, "uniform", uniform)
    aug = RandomRatioResize(192, 768, (0.5, 2.0))
    assert resized_shape(aug, h, w) == mmcv_rescale(h, w, 192, 768, 1.25)
    assert drawn == [(0.5, 2.0)]


def test_ratio_range_bounds_the_short_side():
    aug = RandomRatioResize(100, 10000, (0.5, 2.0))
    shorts = [min(resized_shape(aug, 60, 80)) for _ in range(200)]
    assert min(shorts) >= 50 and max(shorts) <= 200
    assert min(shorts) < 70 and max(shorts) > 180  # the whole range is drawn


def test_ratio_scale_is_truncated_as_mmseg():
    # mmseg's Resize.random_sample_ratio draws r, then the target scale is
    # (int(long * r), int(short * r)) before mmcv's rescale: 512 * 0.73 = 373.76 -> 373.
    ratio = 0.73
    aug = RandomRatioResize(512, 2048, (ratio, ratio))
    h, w = 480, 640
    expected = mmcv_rescale(h, w, int(512 * ratio), int(2048 * ratio), 1.0)
    assert expected == (373, 497)
    assert resized_shape(aug, h, w) == expected


def test_bad_ratio_range_is_refused():
    with pytest.raises(ValueError, match="RESIZE_RATIO_RANGE"):
        RandomRatioResize(512, 2048, (2.0, 0.5))


# ------------------------------------------------------------------------------------------------
# photometric_distortion


def params(**kw):
    out = {
        "brightness": None,
        "contrast": None,
        "contrast_first": False,
        "saturation": None,
        "hue": None,
        "bgr": False,
    }
    out.update(kw)
    return out


def random_image(h=16, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("delta", [20.7, -13.2, 32.0, -32.0])
def test_brightness_is_a_clipped_float32_shift(delta):
    img = random_image()
    expected = np.clip(img.astype(np.float32) + np.float32(delta), 0, 255).astype(np.uint8)
    out = photometric_distortion(img, params(brightness=delta))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    assert (out == (255 if delta > 0 else 0)).sum() > (img == (255 if delta > 0 else 0)).sum()


@pytest.mark.parametrize("alpha", [0.5, 0.83, 1.37])
@pytest.mark.parametrize("first", [False, True])
def test_contrast_is_a_clipped_float32_scale(alpha, first):
    img = random_image()
    expected = np.clip(img.astype(np.float32) * np.float32(alpha), 0, 255).astype(np.uint8)
    out = photometric_distortion(img, params(contrast=alpha, contrast_first=first))
    np.testing.assert_array_equal(out, expected)


def test_none_everywhere_is_the_identity():
    img = random_image()
    for bgr in (False, True):
        np.testing.assert_array_equal(photometric_distortion(img, params(bgr=bgr)), img)


def hsv_by_colorsys(rgb, hue_shift=0, saturation=1.0):
    """Shift the hue by hue_shift OpenCV units (2 degrees each), scale the saturation."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = ((h * 360 + 2 * hue_shift) % 360) / 360
    return np.array(colorsys.hsv_to_rgb(h, min(s * saturation, 1.0), v)) * 255


COLOURS = [(255, 0, 0), (200, 100, 50), (255, 0, 255), (30, 200, 90), (40, 90, 220)]


@pytest.mark.parametrize("rgb", COLOURS)
@pytest.mark.parametrize("shift", [10, -7, 18, -18])
def test_hue_shift_of_a_pure_colour(rgb, shift):
    img = np.full((3, 4, 3), rgb, dtype=np.uint8)
    out = photometric_distortion(img, params(hue=shift))
    expected = hsv_by_colorsys(rgb, hue_shift=shift)
    assert np.abs(out.astype(float) - expected).max() <= 3, (out[0, 0], expected)
    # the same in BGR order
    out_bgr = photometric_distortion(img[..., ::-1], params(hue=shift, bgr=True))
    np.testing.assert_array_equal(out_bgr[..., ::-1], out)


@pytest.mark.parametrize("rgb", COLOURS)
@pytest.mark.parametrize("factor", [0.5, 0.8])
def test_saturation_of_a_pure_colour(rgb, factor):
    img = np.full((3, 4, 3), rgb, dtype=np.uint8)
    out = photometric_distortion(img, params(saturation=factor))
    expected = hsv_by_colorsys(rgb, saturation=factor)
    assert np.abs(out.astype(float) - expected).max() <= 3, (out[0, 0], expected)


def test_wrap_around_of_the_hue():
    # magenta (300 degrees, OpenCV 150) + 18 units -> 336 degrees; 336 + 36 wraps to 12 degrees
    img = np.full((2, 2, 3), (255, 0, 102), dtype=np.uint8)  # 336 degrees
    out = photometric_distortion(img, params(hue=18))[0, 0]
    expected = hsv_by_colorsys((255, 0, 102), hue_shift=18)
    assert np.abs(out.astype(float) - expected).max() <= 3, (out, expected)
    assert out[1] > out[2]  # past red: green rises, blue is 0


def test_order_of_the_steps():
    # mmseg: brightness, [contrast], saturation, hue, [contrast]; every step clips to uint8.
    img = random_image(seed=1)
    b, c, s, h = 25.0, 1.4, 0.7, 9

    def step(x, **kw):
        return photometric_distortion(x, params(**kw))

    first = step(step(step(step(img, brightness=b), contrast=c), saturation=s), hue=h)
    last = step(step(step(step(img, brightness=b), saturation=s), hue=h), contrast=c)
    assert not np.array_equal(first, last)
    both = dict(brightness=b, contrast=c, saturation=s, hue=h)
    np.testing.assert_array_equal(step(img, contrast_first=True, **both), first)
    np.testing.assert_array_equal(step(img, contrast_first=False, **both), last)


def test_each_step_is_drawn_half_of_the_time(monkeypatch):
    recorded = []

    def record(image, p):
        recorded.append(dict(p))
        return image

    monkeypatch.setattr(sem_seg_aug, "photometric_distortion", record)
    aug = PhotoMetricDistortion()
    img = random_image()
    n = 2000
    for _ in range(n):
        aug.get_transform(img).apply_image(img)
    assert len(recorded) == n
    for key in ("brightness", "contrast", "saturation", "hue"):
        applied = [p[key] for p in recorded if p[key] is not None]
        assert abs(len(applied) / n - 0.5) < 0.05, key
    assert abs(np.mean([p["contrast_first"] for p in recorded]) - 0.5) < 0.05
    both = sum(p["brightness"] is not None and p["hue"] is not None for p in recorded)
    assert abs(both / n - 0.25) < 0.04  # independent coins
    brightness = np.array([p["brightness"] for p in recorded if p["brightness"] is not None])
    assert brightness.min() >= -32 and brightness.max() <= 32
    assert brightness.min() < -28 and brightness.max() > 28
    for key in ("contrast", "saturation"):
        values = np.array([p[key] for p in recorded if p[key] is not None])
        assert values.min() >= 0.5 and values.max() <= 1.5
        assert values.min() < 0.55 and values.max() > 1.45
    hues = {p["hue"] for p in recorded if p["hue"] is not None}
    assert hues == set(range(-18, 18))  # integers in [-18, 18)
    assert not any(p["bgr"] for p in recorded)
    recorded.clear()
    PhotoMetricDistortion(image_format="BGR").get_transform(img).apply_image(img)
    assert recorded[0]["bgr"]


def test_brightness_changes_a_grey_image_about_half_of_the_time():
    # On a grey image saturation and hue do nothing and contrast 1 is the identity: the output
    # differs iff a brightness delta outside [0, 1) was drawn (1/64 of the drawn ones fall inside).
    aug = PhotoMetricDistortion(contrast_range=(1.0, 1.0))
    img = np.full((4, 4, 3), 128, dtype=np.uint8)
    n = 1000
    changed = 0
    for _ in range(n):
        out = aug.get_transform(img).apply_image(img.copy())
        delta = out.astype(int) - 128
        assert (delta == delta[0, 0, 0]).all() and -32 <= delta[0, 0, 0] <= 32
        changed += bool(delta.any())
    assert abs(changed / n - 0.5 * 63 / 64) < 0.05


def test_augmentation_order(load_config):
    cfg = load_config(SEMANTIC_FPN)
    train = build_sem_seg_augmentation(cfg, is_train=True)
    assert [type(a) for a in train] == [
        RandomRatioResize,
        CategoryAreaRandomCrop,
        T.RandomFlip,
        PhotoMetricDistortion,
    ]
    assert (train[0].short, train[0].long) == (160, 640)
    test = build_sem_seg_augmentation(cfg, is_train=False)
    assert [type(a) for a in test] == [T.ResizeShortestEdge]
    cfg = load_config(SEMANTIC_FPN, "SEMSEG.PHOTOMETRIC_DISTORTION", "False")
    assert PhotoMetricDistortion not in [type(a) for a in build_sem_seg_augmentation(cfg, True)]


# ------------------------------------------------------------------------------------------------
# SemSegDatasetMapper

H, W = 40, 56
RED, BLUE = (230, 20, 20), (20, 20, 230)


def two_halves_label():
    """Class 1 on the left half, class 2 on the right, a 255 band at the top, 0 at the bottom."""
    label = np.zeros((H, W), dtype=np.uint8)
    label[:, : W // 2] = 1
    label[:, W // 2 :] = 2
    label[:4] = IGNORE
    label[-4:] = 0
    return label


def write_image(path, label):
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    image[label == 1] = RED
    image[label == 2] = BLUE
    Image.fromarray(image).save(path)
    return image


def mapper_config(load_config, *opts):
    return load_config(
        SEMANTIC_FPN,
        "SEMSEG.TRAIN_SCALE",
        "(48, 192)",
        "INPUT.CROP.SIZE",
        "(32, 32)",
        "SEMSEG.PHOTOMETRIC_DISTORTION",
        "False",
        *opts,
    )


@pytest.fixture
def files(tmp_path):
    label = two_halves_label()
    paths = {"image": str(tmp_path / "image.png"), "label": str(tmp_path / "label.png")}
    image = write_image(paths["image"], label)
    Image.fromarray(label, mode="L").save(paths["label"])
    Image.fromarray(image).save(str(tmp_path / "image.jpg"), quality=95)
    paths["jpeg"] = str(tmp_path / "image.jpg")

    bad = label.copy()
    bad[10, 10] = 40  # the bundled set has 13 classes
    paths["out_of_range"] = str(tmp_path / "out_of_range.png")
    Image.fromarray(bad, mode="L").save(paths["out_of_range"])

    paths["small"] = str(tmp_path / "small.png")
    Image.fromarray(label[:-2], mode="L").save(paths["small"])
    return paths, image, label


@pytest.mark.parametrize("photometric", [False, True])
def test_training_output_is_aligned_and_valued(load_config, files, photometric):
    paths, _, label = files
    cfg = mapper_config(load_config, "SEMSEG.PHOTOMETRIC_DISTORTION", str(photometric))
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    values = set(np.unique(label).tolist()) | {IGNORE}
    for i in range(20):
        file_name = paths["jpeg"] if i % 2 else paths["image"]
        out = mapper({"file_name": file_name, "sem_seg_file_name": paths["label"]})
        assert "sem_seg_file_name" not in out
        assert (out["height"], out["width"]) == (H, W)
        image, sem_seg = out["image"].numpy(), out["sem_seg"].numpy()
        assert image.dtype == np.uint8 and image.shape[0] == 3
        assert sem_seg.dtype == np.int64
        assert sem_seg.shape == image.shape[1:]
        assert set(np.unique(sem_seg).tolist()) <= values
        if photometric:
            continue
        # the same geometry on both: red pixels (RGB) are class 1, blue ones class 2
        red = (image[0] > 150) & (image[2] < 100)
        blue = (image[2] > 150) & (image[0] < 100)
        for cls, colour in ((1, red), (2, blue)):
            if (sem_seg == cls).sum() > 30:
                assert colour[sem_seg == cls].mean() > 0.8, (i, cls)


def test_palette_label_is_read_as_indices(load_config, files, tmp_path):
    paths, _, label = files
    palette_label = Image.fromarray(label, mode="P")
    palette = [0] * 768
    # index 1 is white, index 2 black: grey levels (255, 0) would not be the class ids
    palette[3:9] = [255, 255, 255, 0, 0, 0]
    palette_label.putpalette(palette)
    path = str(tmp_path / "palette.png")
    palette_label.save(path)
    assert Image.open(path).mode == "P"
    # no resize (ratio 1 at the image's own size), no crop: the label comes back whole or flipped
    cfg = mapper_config(
        load_config,
        "SEMSEG.TRAIN_SCALE",
        f"({H}, {W})",
        "SEMSEG.RESIZE_RATIO_RANGE",
        "(1.0, 1.0)",
        "INPUT.CROP.ENABLED",
        "False",
    )
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    flips = set()
    for _ in range(10):
        sem_seg = mapper({"file_name": paths["image"], "sem_seg_file_name": path})["sem_seg"]
        sem_seg = sem_seg.numpy()
        flipped = np.array_equal(sem_seg, label[:, ::-1])
        assert flipped or np.array_equal(sem_seg, label)
        flips.add(flipped)
    assert flips == {False, True}


@pytest.mark.parametrize("bad", ["out_of_range", "small", "missing"])
def test_bad_label_is_skipped_and_counted_in_training(load_config, files, bad, tmp_path):
    paths, _, _ = files
    label_path = paths.get(bad, str(tmp_path / "missing.png"))
    mapper = SemSegDatasetMapper(mapper_config(load_config), is_train=True)
    before = SemSegDatasetMapper.num_skipped_labels
    assert mapper({"file_name": paths["image"], "sem_seg_file_name": label_path}) is None
    assert SemSegDatasetMapper.num_skipped_labels == before + 1
    # a good sample does not count
    assert mapper({"file_name": paths["image"], "sem_seg_file_name": paths["label"]}) is not None
    assert SemSegDatasetMapper.num_skipped_labels == before + 1


@pytest.mark.parametrize("bad", ["out_of_range", "small", "missing"])
def test_bad_label_raises_naming_the_file_without_skipping(load_config, files, bad, tmp_path):
    paths, _, _ = files
    label_path = paths.get(bad, str(tmp_path / "missing.png"))
    cfg = mapper_config(load_config, "FINETUNE.SKIP_CORRUPT_IMAGES", "False")
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    before = SemSegDatasetMapper.num_skipped_labels
    with pytest.raises(SemSegLabelError, match=re.escape(label_path)) as info:
        mapper({"file_name": paths["image"], "sem_seg_file_name": label_path})
    assert info.value.file_name == label_path
    assert SemSegDatasetMapper.num_skipped_labels == before


def test_inference_reads_no_label(load_config, files, tmp_path):
    paths, _, _ = files
    mapper = SemSegDatasetMapper(mapper_config(load_config), is_train=False)
    for label_path in (paths["label"], paths["out_of_range"], str(tmp_path / "missing.png")):
        out = mapper({"file_name": paths["image"], "sem_seg_file_name": label_path, "image_id": 7})
        assert "sem_seg" not in out and "sem_seg_file_name" not in out
        assert (out["height"], out["width"]) == (H, W)
        assert out["image_id"] == 7
        # the test resize: short side to MIN_SIZE_TEST 160 (long side 224 <= 640)
        scale = 160 / min(H, W)
        assert tuple(out["image"].shape) == (3, int(H * scale + 0.5), int(W * scale + 0.5))
