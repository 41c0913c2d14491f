import copy

import numpy as np
import pytest
from detectron2.data import detection_utils as utils
from drawn_rectangle import annotations, draw
from PIL import Image, ImageEnhance, ImageOps

from detpre.data.transforms.color_ops import PIL_COLOR_OPS, CutoutTransform, PILColorOpTransform

BOX = (10, 8, 30, 20)


@pytest.fixture(scope="module")
def image():
    rng = np.random.RandomState(0)
    img = draw(24, 40, BOX)
    # Texture, so that equalize / autocontrast / sharpness do something non-trivial.
    return np.clip(img.astype(int) + rng.randint(-15, 16, img.shape), 0, 255).astype(np.uint8)


def _pil(img, fn):
    return np.asarray(fn(Image.fromarray(img)))


CASES = [
    ("AutoContrast", (), ImageOps.autocontrast),
    ("Equalize", (), ImageOps.equalize),
    ("Invert", (), lambda im: Image.fromarray(255 - np.asarray(im))),
    ("Posterize", (4,), lambda im: ImageOps.posterize(im, 4)),
    ("Solarize", (100,), lambda im: ImageOps.solarize(im, 100)),
    ("Color", (0.3,), lambda im: ImageEnhance.Color(im).enhance(0.3)),
    ("Contrast", (1.9,), lambda im: ImageEnhance.Contrast(im).enhance(1.9)),
    ("Brightness", (0.5,), lambda im: ImageEnhance.Brightness(im).enhance(0.5)),
    ("Sharpness", (1.9,), lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
]


def test_every_op_is_covered():
    assert sorted(PIL_COLOR_OPS) == sorted([c[0] for c in CASES] + ["SolarizeAdd"])


@pytest.mark.parametrize("name,args,reference", CASES, ids=[c[0] for c in CASES])
def test_values_against_pil(image, name, args, reference):
    out = PILColorOpTransform(name, args).apply_image(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, _pil(image, reference))
    assert not np.array_equal(out, image)


def test_solarize_add_against_numpy(image):
    out = PILColorOpTransform("SolarizeAdd", (60,)).apply_image(image)
    expected = np.where(image < 128, np.minimum(image.astype(int) + 60, 255), image)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name,args", [("Color", (0.2,)), ("Contrast", (1.7,)), ("Equalize", ())])
def test_bgr_images_are_treated_as_rgb(image, name, args):
    rgb = PILColorOpTransform(name, args, image_format="RGB").apply_image(image)
    bgr = PILColorOpTransform(name, args, image_format="BGR").apply_image(image[..., ::-1])
    np.testing.assert_array_equal(bgr[..., ::-1], rgb)


def test_cutout_fills_the_rectangle_only(image):
    out = CutoutTransform(-5, 4, 12, 30, fill=128).apply_image(image)
    expected = image.copy()
    expected[4:30, 0:12] = 128
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "tfm",
    [PILColorOpTransform(n, a) for n, a, _ in CASES]
    + [PILColorOpTransform("SolarizeAdd", (60,)), CutoutTransform(5, 5, 25, 15)],
    ids=lambda t: getattr(t, "name", "Cutout"),
)
def test_geometry_is_unchanged(image, tfm):
    h, w = image.shape[:2]
    out = tfm.apply_image(image)
    for ann in annotations(BOX, h, w):
        res = utils.transform_instance_annotations(copy.deepcopy(ann), [tfm], out.shape[:2])
        np.testing.assert_array_equal(res["bbox"], BOX)
        if isinstance(ann["segmentation"], list):
            np.testing.assert_array_equal(res["segmentation"][0], ann["segmentation"][0])
        else:
            mask = np.zeros((h, w), np.uint8)
            mask[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 1
            np.testing.assert_array_equal(res["segmentation"], mask)


def test_bad_input_is_named():
    with pytest.raises(KeyError, match="Rotate"):
        PILColorOpTransform("Rotate")
    with pytest.raises(ValueError, match="image_format"):
        PILColorOpTransform("Equalize", image_format="L")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        PILColorOpTransform("Equalize").apply_image(np.zeros((4, 4, 3), np.float32))
