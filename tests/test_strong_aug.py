import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask
from drawn_rectangle import check_rectangle, draw, geometric_part, iou, pixel_box, rectangle_pixels
from PIL import Image

from detpre.config import add_detpre_config
from detpre.data.transforms import (
    STRONG_AUG_PRESETS,
    build_strong_augmentation,
    build_strong_augmentation_preset,
)
from detpre.data.transforms.autoaugment import DetectionAutoAugment, RandAugment
from detpre.data.transforms.geometric_ops import AffineTransform

H, W = 120, 160
BOX = (40, 30, 104, 78)
SIZE = 128


@pytest.fixture(scope="module")
def image():
    return draw(H, W, BOX)


def _cfg(preset, **overrides):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.INPUT.STRONG_AUG.PRESET = preset
    cfg.INPUT.STRONG_AUG.IMAGE_SIZE = SIZE
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return cfg


def _run(augs, image):
    inp = T.AugInput(image.copy())
    tfms = T.AugmentationList(augs)(inp)
    return inp.image, tfms


def test_config_defaults():
    cfg = _cfg("S4")
    sa = get_cfg()
    add_detpre_config(sa)
    sa = sa.INPUT.STRONG_AUG
    assert sa.PRESET in STRONG_AUG_PRESETS and sa.PRESET == "S4"
    assert tuple(sa.SCALE_RANGE) == (0.8, 1.2) and tuple(sa.LARGE_SCALE_RANGE) == (0.5, 2.0)
    assert sa.RANDAUG_MAGNITUDE == 10 and sa.AUTOAUG_POLICY == "v0"
    augs = build_strong_augmentation(cfg)
    assert isinstance(augs[0], RandAugment) and augs[0].magnitude == 10
    assert augs[0].image_format == cfg.INPUT.FORMAT


def test_none_is_detectron2_default():
    cfg = _cfg("none")
    assert repr(build_strong_augmentation(cfg)) == repr(utils.build_augmentation(cfg, True))
    for preset in STRONG_AUG_PRESETS:  # evaluation never uses the preset
        test = build_strong_augmentation(_cfg(preset), is_train=False)
        assert repr(test) == repr(utils.build_augmentation(cfg, False))


@pytest.mark.parametrize(
    "preset,policy",
    [("S1", None), ("S2", DetectionAutoAugment), ("S3", DetectionAutoAugment), ("S4", RandAugment)],
)
def test_preset_composition_and_scale_range(image, preset, policy):
    augs = build_strong_augmentation(_cfg(preset))
    assert (policy is None) == (not isinstance(augs[0], (DetectionAutoAugment, RandAugment)))
    if policy is not None:
        assert isinstance(augs[0], policy)
    lo, hi = (0.5, 2.0) if preset in ("S3", "S4") else (0.8, 1.2)
    widths, flips = [], 0
    np.random.seed(0)
    for _ in range(60):
        out, tfms = _run(augs, image)
        assert out.shape == (SIZE, SIZE, 3)
        (resize,) = [t for t in tfms.transforms if isinstance(t, T.ResizeTransform)]
        widths.append(resize.new_w)
        flips += any(isinstance(t, T.HFlipTransform) for t in tfms.transforms)
    # the image is fitted into SIZE x SIZE times the jitter scale: width = 0.8 * scale * W
    scales = np.array(widths) / (SIZE / W * W)
    assert scales.min() >= lo - 0.01 and scales.max() <= hi + 0.01
    assert scales.min() < lo + 0.25 * (hi - lo) and scales.max() > hi - 0.25 * (hi - lo)
    assert 15 < flips < 45


@pytest.mark.parametrize("preset", STRONG_AUG_PRESETS)
def test_preset_moves_boxes_and_masks_with_the_image(image, preset):
    """The drawn rectangle through each preset; the rectangle's pixels are read from the image
    moved by the preset's geometric transforms (colour ops and Cutout do not move annotations and
    are checked alone in test_autoaugment / test_color_ops)."""
    augs = build_strong_augmentation_preset(
        preset, image_size=SIZE, min_size=(96,), max_size=200, image_format="RGB"
    )
    visible = 0
    for seed in range(8):
        np.random.seed(seed)
        out, tfms = _run(augs, image)
        geometric = geometric_part(tfms)
        rotated = any(  # rotations and shears: the box contains the pixels' box
            isinstance(t, AffineTransform) and abs(t.matrix[0, 1]) + abs(t.matrix[1, 0]) > 1e-9
            for t in geometric.transforms
        )
        pixels_image = geometric.apply_image(image)
        assert pixels_image.shape == out.shape
        visible += check_rectangle(tfms, image, BOX, pixels_image, contains=rotated) > 0
    assert visible >= 6


def _dataset_dict(tmp_path, image, fmt):
    path = os.path.join(tmp_path, "rect.png")
    Image.fromarray(image).save(path)
    x0, y0, x1, y1 = BOX
    if fmt == "polygon":
        segm = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    else:
        mask = np.zeros((H, W), np.uint8, order="F")
        mask[y0:y1, x0:x1] = 1
        segm = mask_util.encode(mask)
    ann = {
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "segmentation": segm,
    }
    return {"file_name": path, "height": H, "width": W, "image_id": 0, "annotations": [ann]}


@pytest.mark.parametrize("fmt", ["polygon", "bitmask"])
def test_dataset_mapper_end_to_end(tmp_path, image, fmt):
    """S1 in Detectron2's DatasetMapper (BGR): boxes and masks match the rectangle's pixels."""
    cfg = _cfg("S1", **{"MODEL.MASK_ON": True, "INPUT.MASK_FORMAT": fmt})
    mapper = DatasetMapper(
        cfg, is_train=True, augmentations=build_strong_augmentation(cfg), recompute_boxes=True
    )
    for seed in range(4):
        np.random.seed(seed)
        out = mapper(_dataset_dict(tmp_path, image, fmt))
        rgb = out["image"].permute(1, 2, 0).numpy()[..., ::-1]
        assert rgb.shape == (SIZE, SIZE, 3)
        pixels = rectangle_pixels(rgb)
        inst = out["instances"]
        assert len(inst) == 1
        # recompute_boxes takes the boxes from the (clipped) masks
        np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(), pixel_box(pixels), atol=2)
        masks = inst.gt_masks
        if fmt == "polygon":
            mask = polygons_to_bitmask(masks.polygons[0], SIZE, SIZE)
        else:
            mask = masks.tensor[0].numpy()
        assert iou(mask, pixels) > 0.9


def test_s4_dataset_mapper_runs_on_coco_tiny(datasets_root):
    from detectron2.data import DatasetCatalog

    import detpre.data.datasets  # noqa: F401  registers coco_tiny_train

    cfg = _cfg("S4", **{"MODEL.MASK_ON": True})
    mapper = DatasetMapper(cfg, is_train=True, augmentations=build_strong_augmentation(cfg))
    np.random.seed(0)
    for d in DatasetCatalog.get("coco_tiny_train")[:3]:
        out = mapper(d)
        assert tuple(out["image"].shape) == (3, SIZE, SIZE)
        boxes = out["instances"].gt_boxes.tensor
        assert (boxes >= 0).all() and (boxes <= SIZE).all()


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="PRESET='S5'"):
        build_strong_augmentation(_cfg("S5"))
    with pytest.raises(ValueError, match="LARGE_SCALE_RANGE"):
        build_strong_augmentation(_cfg("S3", **{"INPUT.STRONG_AUG.LARGE_SCALE_RANGE": (2.0, 0.5)}))
    with pytest.raises(ValueError, match="IMAGE_SIZE=0"):
        build_strong_augmentation(_cfg("S1", **{"INPUT.STRONG_AUG.IMAGE_SIZE": 0}))
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        build_strong_augmentation_preset("S1", image_size=64, flip="diagonal")


@pytest.mark.parametrize("strong", [False, True])
def test_finetune_trainer_mapper_follows_finetune_strong_aug(datasets_root, strong):
    """FINETUNE.STRONG_AUG: the fine-tuning (and self-training teacher) mapper takes the preset;
    off, it is Detectron2's resize and flip."""
    from detectron2.data import DatasetCatalog

    import detpre.data.datasets  # noqa: F401  registers coco_tiny_train
    from detpre.engine import FinetuneTrainer

    cfg = _cfg("S1", **{"FINETUNE.STRONG_AUG": strong, "INPUT.MIN_SIZE_TRAIN": (96,)})
    mapper = FinetuneTrainer.build_train_mapper(cfg)
    want = build_strong_augmentation(cfg) if strong else utils.build_augmentation(cfg, True)
    assert [type(a) for a in mapper.augmentations.augs] == [type(a) for a in want]
    for d in DatasetCatalog.get("coco_tiny_train")[:3]:
        out = mapper(d)
        h, w = out["image"].shape[1:]
        if strong:
            assert (h, w) == (SIZE, SIZE)  # S1's square crop
        else:
            assert min(h, w) == 96
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
