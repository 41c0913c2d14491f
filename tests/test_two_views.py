import logging
import os
import random

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import detection_utils as utils
from detectron2.data.common import MapDataset

import detpre.data.mappers.moco as moco_mapper
from detpre.config import add_detpre_config
from detpre.data.build import PRETRAIN_MAPPER_REGISTRY, build_pretrain_mapper
from detpre.data.mappers.moco import TwoCropsMapper
from detpre.data.transforms.crops import sample_crop

IMAGES = ("n01440764_tench.JPEG", "n01514859_hen.JPEG", "n01560419_bulbul.JPEG")


def _cfg(fmt="BGR", flip=0.0, pixel_aug=False, **moco_opts):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.INPUT.FORMAT = fmt
    a = cfg.INPUT.SSL_AUG
    if not pixel_aug:
        a.COLOR_JITTER_PROB = a.GRAYSCALE_PROB = a.BLUR_PROB = 0.0
    a.FLIP_PROB = flip
    for k, v in moco_opts.items():
        cfg.MOCO[k] = v
    return cfg


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(scope="module")
def dicts(datasets_root):
    folder = os.path.join(datasets_root, "imagenet_sample/images")
    return [{"file_name": os.path.join(folder, n), "image_id": 7 + i} for i, n in enumerate(IMAGES)]


def test_two_crops_shapes_and_boxes(dicts):
    mapper = TwoCropsMapper(_cfg(pixel_aug=True, flip=0.5))
    _seed(0)
    for d in dicts:
        out = mapper(d)
        assert out["file_name"] == d["file_name"] and out["image_id"] == d["image_id"]
        assert len(out["views"]) == 2
        for view in out["views"]:
            assert view["image"].dtype == torch.uint8 and view["image"].shape == (3, 224, 224)
            assert view["boxes"].tensor.tolist() == [[0.0, 0.0, 224.0, 224.0]]
        assert not torch.equal(out["views"][0]["image"], out["views"][1]["image"])


def test_views_are_resized_crops(dicts, monkeypatch):
    crops = []

    def spy(*args, **kwargs):
        crops.append(sample_crop(*args, **kwargs))
        return crops[-1]

    monkeypatch.setattr(moco_mapper, "sample_crop", spy)
    mapper = TwoCropsMapper(_cfg(CROP_SIZE=96))
    for seed, d in enumerate(dicts):
        _seed(seed)
        crops.clear()
        out = mapper(d)
        image = utils.read_image(d["file_name"], "BGR")
        assert len(crops) == 2 and crops[0] != crops[1]
        for view, (y, x, h, w) in zip(out["views"], crops):
            # MOCO.CROP_RATIO (3/4, 4/3) and CROP_SCALE (0.2, 1), up to the rounding of w and h.
            assert (w + 0.5) / (h - 0.5) >= 0.75 and (w - 0.5) / (h + 0.5) <= 4 / 3
            assert (w + 0.5) * (h + 0.5) >= 0.2 * image.shape[0] * image.shape[1]
            crop = np.ascontiguousarray(image[y : y + h, x : x + w])
            interp = cv2.INTER_AREA if max(h, w) / 96 > 2 else cv2.INTER_LINEAR
            expected = cv2.resize(crop, (96, 96), interpolation=interp)
            assert np.array_equal(view["image"].permute(1, 2, 0).numpy(), expected)
            assert view["boxes"].tensor.tolist() == [[0.0, 0.0, 96.0, 96.0]]


def test_flip_mirrors_the_view(dicts):
    plain, flipped = TwoCropsMapper(_cfg(flip=0.0)), TwoCropsMapper(_cfg(flip=1.0))
    _seed(4)
    a = plain(dicts[0])
    _seed(4)
    b = flipped(dicts[0])
    for va, vb in zip(a["views"], b["views"]):
        assert torch.equal(vb["image"], va["image"].flip(-1))
        assert torch.equal(vb["boxes"].tensor, va["boxes"].tensor)  # the whole view


def test_rgb_format_is_bgr_reversed(dicts):
    _seed(5)
    a = TwoCropsMapper(_cfg("BGR", pixel_aug=True))(dicts[1])
    _seed(5)
    b = TwoCropsMapper(_cfg("RGB", pixel_aug=True))(dicts[1])
    for va, vb in zip(a["views"], b["views"]):
        assert torch.equal(va["image"], vb["image"].flip(0))


def test_corrupt_image_is_skipped_and_counted(tmp_path, dicts, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("detpre"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="detpre")
    truncated = tmp_path / "truncated.jpg"
    with open(dicts[0]["file_name"], "rb") as f:
        truncated.write_bytes(f.read()[:500])
    missing = str(tmp_path / "missing.jpg")
    items = list(dicts) + [{"file_name": str(truncated)}, {"file_name": missing}]
    mapper = TwoCropsMapper(_cfg())
    assert mapper(items[3]) is None and mapper(items[4]) is None
    assert mapper.num_skipped == 2
    assert str(truncated) in caplog.text and missing in caplog.text
    _seed(0)
    out = MapDataset(items, mapper)[3]
    assert out is not None and out["file_name"] in {d["file_name"] for d in dicts}


def test_config_and_registry(dicts):
    cfg = _cfg()
    cfg.SSL.MAPPER = "TwoCropsMapper"
    assert PRETRAIN_MAPPER_REGISTRY.get("TwoCropsMapper") is TwoCropsMapper
    mapper = build_pretrain_mapper(cfg, dicts)
    assert isinstance(mapper, TwoCropsMapper)
    assert mapper.crop_size == 224 and mapper.crop_scale == (0.2, 1.0)
    assert mapper.crop_ratio == pytest.approx((0.75, 4 / 3))
    with pytest.raises(ValueError, match="MOCO.CROP_SCALE"):
        TwoCropsMapper(_cfg(CROP_SCALE=(0.0, 1.0)))
    with pytest.raises(ValueError, match="MOCO.CROP_RATIO"):
        TwoCropsMapper(_cfg(CROP_RATIO=(2.0, 0.5)))
    with pytest.raises(ValueError, match="is_train"):
        TwoCropsMapper(cfg, is_train=False)
