"""
The data path of the pretext mappers: each file read once (detpre.data.image_io.ImageFile), JPEGs
decoded at a reduced size where the crops allow (the sampled geometry unchanged), and the colour
jitter's OpenCV hue step against torchvision's.
"""

import math
import os
import random

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

import detpre.data.image_io as image_io
from detpre.config import add_detpre_config
from detpre.data.build import PRETRAIN_MAPPER_REGISTRY
from detpre.data.image_io import CorruptImageError, ImageFile, read_image
from detpre.data.transforms.crops import chw_tensor, hflip_image, hwc_array, scale_crop
from detpre.data.transforms.pixel_aug import ColorJitter, adjust_hue
from detpre.engine import get_detpre_cfg

IMAGES = ["n01440764_tench.JPEG", "n01514859_hen.JPEG", "n01560419_bulbul.JPEG"]


@pytest.fixture(scope="module")
def sample_files(datasets_root):
    folder = os.path.join(datasets_root, "imagenet_sample/images")
    return [os.path.join(folder, n) for n in IMAGES]


@pytest.fixture(scope="module")
def large_files(sample_files, tmp_path_factory):
    """The sample images upscaled 3.2x (about 1600 x 1200) and saved as JPEG, quality 95."""
    folder = tmp_path_factory.mktemp("large")
    paths = []
    for i, f in enumerate(sample_files):
        image = cv2.imread(f)
        big = cv2.resize(image, None, fx=3.2, fy=3.2, interpolation=cv2.INTER_CUBIC)
        path = str(folder / f"large_{i}.jpg")
        cv2.imwrite(path, big, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def rotated_file(sample_files, tmp_path_factory):
    """A JPEG whose EXIF orientation (6) turns its stored 640 x 480 pixels upright as 480 x 640."""
    image = Image.fromarray(cv2.resize(utils.read_image(sample_files[0], "RGB"), (640, 480)))
    exif = image.getexif()
    exif[0x0112] = 6
    path = str(tmp_path_factory.mktemp("exif") / "rotated.jpg")
    image.save(path, exif=exif, quality=95)
    return path


@pytest.fixture
def decode_factors(monkeypatch):
    """The draft factor of every ImageFile.decode call, in order."""
    factors = []
    real_decode = ImageFile.decode

    def spy_decode(self, reduction=1.0):
        factors.append(self.draft_factor(reduction))
        return real_decode(self, reduction)

    monkeypatch.setattr(ImageFile, "decode", spy_decode)
    return factors


# ---------------------------------------------------------------- ImageFile


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "L", None])
def test_full_decode_is_detectron2s(sample_files, rotated_file, fmt):
    for path in sample_files + [rotated_file]:
        image = ImageFile(path, fmt)
        want = utils.read_image(path, format=fmt)
        got = image.decode()
        np.testing.assert_array_equal(got, want)
        assert image.shape == want.shape[:2]
        np.testing.assert_array_equal(read_image(path, format=fmt), want)
    assert ImageFile(rotated_file).shape == (640, 480)


def test_each_file_is_read_once(sample_files, monkeypatch):
    opened = []
    real_open = PathManager.open

    def spy_open(path, mode="r", **kwargs):
        opened.append(path)
        return real_open(path, mode, **kwargs)

    monkeypatch.setattr(image_io.PathManager, "open", spy_open)
    image = ImageFile(sample_files[0])
    image.decode()
    image.decode(2.0)
    image.resized_crops([(0, 0, 100, 100), (10, 20, 50, 60)], [(32, 32), (16, 16)])
    read_image(sample_files[1], "BGR")
    assert opened == sample_files[:2]


def test_draft_factor_and_decoded_size(large_files, rotated_file, tmp_path):
    image = ImageFile(large_files[0])
    height, width = image.shape
    for reduction, factor in ((1.0, 1), (1.99, 1), (2.0, 2), (3.9, 2), (4.0, 4), (7.99, 4), (9, 8)):
        assert image.draft_factor(reduction) == factor
        decoded = image.decode(reduction)
        # libjpeg's scaled decode rounds each side up: never below side / reduction.
        assert decoded.shape[:2] == (math.ceil(height / factor), math.ceil(width / factor))
    # EXIF orientation is applied after the reduced decode: the upright shape, halved.
    rotated = ImageFile(rotated_file)
    small = rotated.decode(2.0)
    assert small.shape[:2] == (320, 240)
    upright = cv2.resize(rotated.decode(), (240, 320), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(np.float32) - upright).mean() < 2.5  # the same upright picture
    # Not a JPEG: always full size.
    png = str(tmp_path / "image.png")
    cv2.imwrite(png, cv2.imread(large_files[0]))
    assert ImageFile(png).draft_factor(8.0) == 1
    assert ImageFile(png).decode(8.0).shape[:2] == (height, width)


def _area_reference(path, crops, sizes):
    """Each crop of the full-size decode, area-averaged to its size: the reference pixels."""
    image = utils.read_image(path, "RGB")
    return [
        cv2.resize(image[y : y + h, x : x + w], (ow, oh), interpolation=cv2.INTER_AREA)
        for (y, x, h, w), (oh, ow) in zip(crops, sizes)
    ]


def test_reduced_crops_match_full_size_crops(large_files, decode_factors):
    factors = decode_factors
    rng = random.Random(0)
    for path in large_files:
        image = ImageFile(path)
        height, width = image.shape
        for _ in range(4):
            h, w = rng.randint(600, height), rng.randint(600, width)
            crops = [(rng.randint(0, height - h), rng.randint(0, width - w), h, w)]
            crops.append((0, 0, height, width))
            sizes = [(96, 96), (224, 224)]
            factors.clear()
            reduced = image.resized_crops(crops, sizes)
            full = image.resized_crops(crops, sizes, reduce=False)
            want = _area_reference(path, crops, sizes)
            # The reduction is the largest that leaves every crop at least its output size.
            expected = image.draft_factor(
                min(min(c[2] / s[0], c[3] / s[1]) for c, s in zip(crops, sizes))
            )
            assert factors == [expected, 1] and expected >= 4
            for r, f, ref in zip(reduced, full, want):
                assert r.shape == f.shape == ref.shape
                np.testing.assert_array_equal(f, ref)  # resize_image area-averages these
                # DCT-scaled decode vs area averaging: the same picture to a few levels.
                diff = np.abs(r.astype(np.float32) - ref)
                assert diff.mean() < 2.5, diff.mean()


@settings(max_examples=300, deadline=None, database=None)
@given(
    height=st.integers(1, 3000),
    width=st.integers(1, 3000),
    factor=st.sampled_from([1, 2, 4, 8]),
    data=st.data(),
)
def test_scale_crop_rounds_to_the_decoded_grid(height, width, factor, data):
    h = data.draw(st.integers(1, height))
    w = data.draw(st.integers(1, width))
    y = data.draw(st.integers(0, height - h))
    x = data.draw(st.integers(0, width - w))
    shape = (math.ceil(height / factor), math.ceil(width / factor))
    sy, sx = shape[0] / height, shape[1] / width
    y2, x2, h2, w2 = scale_crop((y, x, h, w), sy, sx, shape)
    assert 0 <= y2 and y2 + h2 <= shape[0] and h2 >= 1
    assert 0 <= x2 and x2 + w2 <= shape[1] and w2 >= 1
    if factor == 1:
        assert (y2, x2, h2, w2) == (y, x, h, w)
    # Each bound within half a decoded pixel of the exact one (the mappers' crops are never
    # thinner than a decoded pixel: their reduction keeps them at least their output size); a
    # thinner crop is widened to one pixel, its far bound within 1.5.
    slack = 0.5 + 1e-9 if h * sy >= 1 else 1.5
    assert abs(y2 - y * sy) <= slack and abs(y2 + h2 - (y + h) * sy) <= slack
    slack = 0.5 + 1e-9 if w * sx >= 1 else 1.5
    assert abs(x2 - x * sx) <= slack and abs(x2 + w2 - (x + w) * sx) <= slack


def test_truncated_jpeg_fails_at_decode_naming_the_file(sample_files, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    with open(sample_files[0], "rb") as f:
        truncated.write_bytes(f.read()[:2000])
    image = ImageFile(str(truncated))  # the header is intact
    with pytest.raises(CorruptImageError, match="truncated.jpg") as err:
        image.decode(2.0)
    assert err.value.file_name == str(truncated)
    with pytest.raises(CorruptImageError, match="does not exist"):
        ImageFile(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="XYZ"):
        ImageFile(sample_files[0], "XYZ")


# ---------------------------------------------------------------- the mappers


def _mapper_cfg(name, draft):
    cfg = get_detpre_cfg()
    cfg.SSL.MAPPER = name
    cfg.INPUT.SSL_AUG.DRAFT_DECODE = draft
    return cfg


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _geometry(out):
    views = []
    for view in out["views"]:
        views.append(
            (
                tuple(view["image"].shape),
                view["boxes"].tensor.tolist() if "boxes" in view else None,
                view["crop_box"].tolist() if "crop_box" in view else None,
                view.get("flipped"),
            )
        )
    return views


@pytest.mark.parametrize(
    "mapper", ["TwoCropsMapper", "InsLocCompositionMapper", "SlotConViewsMapper", "LocaViewsMapper"]
)
def test_draft_decode_keeps_the_sampled_geometry(mapper, large_files, sample_files, decode_factors):
    factors = decode_factors
    dicts = [{"file_name": f, "image_id": i} for i, f in enumerate(large_files + sample_files)]
    built = {}
    for draft in (False, True):
        cfg = _mapper_cfg(mapper, draft)
        built[draft] = PRETRAIN_MAPPER_REGISTRY.get(mapper)(cfg, dataset_dicts=dicts)
    diffs = []
    for seed in range(6):
        d = dicts[seed % len(dicts)]
        outs = {}
        for draft in (False, True):
            _seed(seed)
            factors.clear()
            outs[draft] = built[draft](d)
            if not draft:
                assert set(factors) == {1}
        # The same seed draws the same crops, boxes and flips, decoded small or not.
        assert _geometry(outs[True]) == _geometry(outs[False])
        for a, b in zip(outs[True]["views"], outs[False]["views"]):
            diffs.append((a["image"].float() - b["image"].float()).abs().mean().item())
        if seed == 0:
            assert max(factors) >= 2  # a 1600 x 1200 image: the crops allowed a reduced decode
    # Same augmentation draws, so the views differ only by the decode: a few levels at most.
    assert max(diffs) < 6.0 and np.mean(diffs) < 3.0, diffs


def test_draft_decode_key_reaches_every_mapper():
    cfg = get_detpre_cfg()
    assert cfg.INPUT.SSL_AUG.DRAFT_DECODE is True
    cfg.INPUT.SSL_AUG.DRAFT_DECODE = False
    for name in ("TwoCropsMapper", "InsLocCompositionMapper", "SlotConViewsMapper"):
        cfg.SSL.MAPPER = name
        mapper = PRETRAIN_MAPPER_REGISTRY.get(name)(cfg, dataset_dicts=["a.jpg"])
        assert mapper.draft_decode is False
    cfg.SSL.MAPPER = "LocaViewsMapper"
    assert PRETRAIN_MAPPER_REGISTRY.get("LocaViewsMapper")(cfg).draft_decode is False


# ---------------------------------------------------------------- the hue step


@pytest.fixture(scope="module")
def rgb_tensors(sample_files):
    return [
        torch.from_numpy(utils.read_image(f, "RGB")[:224, :224].transpose(2, 0, 1).copy())
        for f in sample_files
    ]


def test_opencv_hue_matches_torchvision(rgb_tensors):
    differing = total = 0
    for image in rgb_tensors:
        for factor in (-0.5, -0.1, -0.03, 0.0, 0.05, 0.1, 0.37, 0.5):
            want = F.adjust_hue(image, factor)
            got = adjust_hue(image, factor)
            diff = (got.int() - want.int()).abs()
            assert got.dtype == torch.uint8 and got.shape == image.shape
            assert diff.max() <= 1
            differing += int((diff > 0).sum())
            total += diff.numel()
    # Measured 6e-5 on ImageNet crops (float rounding on the other side of a level).
    assert differing / total < 1e-3
    with pytest.raises(ValueError, match="hue_factor"):
        adjust_hue(rgb_tensors[0], 0.6)


def test_color_jitter_draws_as_torchvision(rgb_tensors):
    ours, theirs = ColorJitter(0.4, 0.4, 0.4, 0.1), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    for seed in range(20):
        image = rgb_tensors[seed % len(rgb_tensors)]
        torch.manual_seed(seed)
        a = ours(image)
        torch.manual_seed(seed)
        b = theirs(image)
        # The same factors in the same order: a level of hue rounding, amplified by a later
        # contrast or saturation factor up to 1.4, on a few pixels.
        diff = (a.int() - b.int()).abs()
        assert diff.max() <= 3 and (diff > 0).float().mean() < 1e-2
    # Both consumed the same random numbers.
    torch.manual_seed(7)
    ours(image)
    after_ours = torch.rand(1)
    torch.manual_seed(7)
    theirs(image)
    assert torch.equal(after_ours, torch.rand(1))
    # Float images go through torchvision's own kernel: identical.
    image = rgb_tensors[0].float() / 255
    torch.manual_seed(0)
    a = ours(image)
    torch.manual_seed(0)
    assert torch.equal(a, theirs(image))


def test_chw_tensor_and_hflip_image():
    rng = np.random.default_rng(0)
    for shape in ((5, 7, 3), (4, 6, 1), (3, 3, 4)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        for view in (image, image[:, ::-1], image[::2]):
            out = chw_tensor(view)
            assert out.is_contiguous() and out.dtype == torch.uint8
            assert torch.equal(out, torch.from_numpy(view.copy()).permute(2, 0, 1))
        flipped = hflip_image(image)
        assert flipped.flags.c_contiguous and flipped.shape == image.shape
        np.testing.assert_array_equal(flipped, image[:, ::-1])
    gray = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    np.testing.assert_array_equal(hflip_image(gray), gray[:, ::-1])


def test_hwc_array_is_the_transpose():
    rng = np.random.default_rng(1)
    for shape in ((3, 5, 7), (1, 4, 6), (4, 3, 3)):
        tensor = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
        for view in (tensor, tensor.flip(-1)):
            out = hwc_array(view)
            assert out.flags.c_contiguous and out.dtype == np.uint8
            np.testing.assert_array_equal(out, view.permute(1, 2, 0).numpy())
