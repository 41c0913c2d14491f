import copy
import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
from detectron2.data import detection_utils as utils
from PIL import Image

from detpre.config import add_detpre_config
from detpre.data import CorruptImageError, RobustDatasetMapper, read_image, read_image_size


@pytest.fixture(scope="module")
def coco_dicts(datasets_root):
    return DatasetCatalog.get("coco_tiny_train")[:4]


@pytest.fixture
def real_image(coco_dicts):
    return coco_dicts[0]["file_name"]


def _messages(caplog, level=logging.INFO):
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def _truncated(real_image, path):
    data = open(real_image, "rb").read()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return str(path)


def _cfg():
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


# --- read_image -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "random_bytes", "missing"])
def test_unreadable_image_raises_naming_the_file(kind, real_image, tmp_path):
    path = {
        "truncated": lambda: _truncated(real_image, tmp_path / "cut.jpg"),
        "random_bytes": lambda: _random_bytes(tmp_path / "noise.jpg"),
        "missing": lambda: str(tmp_path / "missing.jpg"),
    }[kind]()
    with pytest.raises(CorruptImageError) as info:
        read_image(path, format="BGR")
    assert isinstance(info.value, OSError)
    assert path in str(info.value)
    assert info.value.file_name == path
    if kind == "missing":
        assert "does not exist" in str(info.value)
    else:
        # Detectron2's own reader fails on the same file, so the error is not ours.
        with pytest.raises(OSError):
            utils.read_image(path, format="BGR")


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("CMYK", "jpg"), ("P", "png")])
def test_mode_conversion_matches_pil_and_is_logged(mode, ext, real_image, tmp_path, detpre_logs):
    path = str(tmp_path / f"{mode}.{ext}")
    Image.open(real_image).convert(mode).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
        want = np.asarray(im.convert("RGB"))
    rgb = read_image(path, format="RGB")
    bgr = read_image(path, format="BGR")
    assert rgb.dtype == np.uint8 and rgb.shape == want.shape
    np.testing.assert_array_equal(rgb, want)
    np.testing.assert_array_equal(bgr, want[:, :, ::-1])
    logged = [m for m in _messages(detpre_logs) if path in m]
    assert len(logged) == 1  # once per file, though read twice
    assert f"'{mode}'" in logged[0] and "RGB" in logged[0]


def test_rgba_png_drops_alpha_like_pil(tmp_path, detpre_logs):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (12, 17, 4), dtype=np.uint8)
    path = str(tmp_path / "rgba.png")
    Image.fromarray(rgba, "RGBA").save(path)
    with Image.open(path) as im:
        want = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(want, rgba[:, :, :3])  # PIL drops alpha, no compositing
    np.testing.assert_array_equal(read_image(path, format="RGB"), want)
    (message,) = [m for m in _messages(detpre_logs) if path in m]
    assert "'RGBA'" in message and "alpha" in message


def test_rgb_image_is_not_logged(real_image, detpre_logs):
    image = read_image(real_image, format="BGR")
    np.testing.assert_array_equal(image, utils.read_image(real_image, format="BGR"))
    assert not [m for m in _messages(detpre_logs) if real_image in m]


def test_unknown_format_is_a_value_error(real_image):
    with pytest.raises(ValueError, match="'XYZ'"):
        read_image(real_image, format="XYZ")


def test_read_image_size_applies_exif_rotation(tmp_path):
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (30, 20), (10, 200, 30)).save(path, exif=exif)
    assert read_image_size(path) == (30, 20)
    assert utils.read_image(path, format="RGB").shape[:2] == (30, 20)
    plain = str(tmp_path / "plain.png")
    Image.new("RGB", (30, 20)).save(plain)
    assert read_image_size(plain) == (20, 30)
    with pytest.raises(CorruptImageError, match=str(tmp_path / "none.jpg")):
        read_image_size(str(tmp_path / "none.jpg"))


# --- RobustDatasetMapper ----------------------------------------------------------------------


def test_mapper_is_detectron2_mapper_on_good_images(coco_dicts):
    cfg = _cfg()
    for is_train in (True, False):
        ours = RobustDatasetMapper(cfg, is_train=is_train)
        theirs = DatasetMapper(cfg, is_train=is_train)
        assert ours.skip_corrupt_images is cfg.FINETUNE.SKIP_CORRUPT_IMAGES
        a, b = ours(copy.deepcopy(coco_dicts[1])), theirs(copy.deepcopy(coco_dicts[1]))
        assert a.keys() == b.keys()
        assert torch.equal(a["image"], b["image"])
        assert max(a["image"].shape[1:]) <= 96
        if is_train:
            assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
            assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)


def test_mapper_raises_in_inference(coco_dicts, tmp_path):
    bad = dict(coco_dicts[0], file_name=_random_bytes(tmp_path / "noise.jpg"))
    with pytest.raises(CorruptImageError, match=bad["file_name"]):
        RobustDatasetMapper(_cfg(), is_train=False)(bad)
    cfg = _cfg()
    cfg.FINETUNE.SKIP_CORRUPT_IMAGES = False
    with pytest.raises(CorruptImageError, match=bad["file_name"]):
        RobustDatasetMapper(cfg, is_train=True)(bad)


def test_mapper_does_not_swallow_other_errors(coco_dicts):
    wrong_size = dict(coco_dicts[0], height=coco_dicts[0]["height"] + 1)
    with pytest.raises(utils.SizeMismatchError):
        RobustDatasetMapper(_cfg(), is_train=True)(wrong_size)


def test_mapper_fills_missing_image_size(coco_dicts):
    d = coco_dicts[2]
    unlabeled = {"file_name": d["file_name"], "image_id": "x"}
    out = RobustDatasetMapper(_cfg(), is_train=False)(unlabeled)
    assert (out["height"], out["width"]) == (d["height"], d["width"])
    assert "height" not in unlabeled


def test_train_loader_skips_and_counts_bad_images(coco_dicts, real_image, tmp_path, detpre_logs):
    bad_files = [
        _truncated(real_image, tmp_path / "cut.jpg"),
        str(tmp_path / "missing.jpg"),
    ]
    dataset = copy.deepcopy(coco_dicts) + [
        dict(copy.deepcopy(coco_dicts[0]), file_name=f) for f in bad_files
    ]
    mapper = RobustDatasetMapper(_cfg(), is_train=True)
    seen = []

    def counting_mapper(d):  # records every file the loader asks the mapper for
        seen.append(d["file_name"])
        return mapper(d)

    before = RobustDatasetMapper.num_skipped
    loader = build_detection_train_loader(
        dataset, mapper=counting_mapper, total_batch_size=2, aspect_ratio_grouping=False
    )
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 5:  # 10 images: more than one pass over the 6 indices
            break

    for batch in batches:
        assert len(batch) == 2
        for out in batch:
            assert out["file_name"] not in bad_files
            assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
            assert len(out["instances"]) > 0
    met = sum(f in bad_files for f in seen)
    assert met >= 2  # the sampler's first pass visits both bad indices
    assert RobustDatasetMapper.num_skipped - before == met
    assert len(seen) - met == 10
    warnings = _messages(detpre_logs, logging.WARNING)
    for f in bad_files:
        assert any(f in m and "Skipping training image" in m for m in warnings)
    assert any(f"({RobustDatasetMapper.num_skipped} skipped so far" in m for m in warnings)
