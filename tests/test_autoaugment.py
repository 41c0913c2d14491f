import collections

import numpy as np
import pytest
from detectron2.data import transforms as T
from drawn_rectangle import check_rectangle, draw, transform_annotations

from detpre.data.transforms.autoaugment import (
    AUTOAUGMENT_POLICIES,
    OP_NAMES,
    AugmentOp,
    DetectionAutoAugment,
    RandAugment,
    make_op_transform,
)
from detpre.data.transforms.color_ops import CutoutTransform, PILColorOpTransform
from detpre.data.transforms.geometric_ops import AffineTransform

H, W = 96, 128
BOX = (40, 30, 90, 66)
GEOMETRIC = ("Rotate_BBox", "ShearX_BBox", "ShearY_BBox", "TranslateX_BBox", "TranslateY_BBox")


@pytest.fixture(scope="module")
def image():
    return draw(H, W, BOX)


def _flat(tfm):
    return [t for t in tfm.transforms if not isinstance(t, T.NoOpTransform)]


def test_op_pool():
    # TF RandAugment's 16 ops (Model Garden augment.py: AutoContrast, Equalize, Invert, Rotate,
    # Posterize, Solarize, Color, Contrast, Brightness, Sharpness, ShearX, ShearY, TranslateX,
    # TranslateY, Cutout, SolarizeAdd; the geometric ones box-aware)
    assert len(OP_NAMES) == 16 and set(GEOMETRIC) <= set(OP_NAMES) and "Invert" in OP_NAMES
    assert not any("Only_BBoxes" in n for n in OP_NAMES)
    assert len(AUTOAUGMENT_POLICIES["v0"]) == 5 and len(AUTOAUGMENT_POLICIES["v1"]) == 20
    for policy in AUTOAUGMENT_POLICIES.values():
        for sub in policy:
            for name, prob, level in sub:
                assert name in OP_NAMES and 0 <= prob <= 1 and 0 <= level <= 10


@pytest.mark.parametrize("level", [4, 10])
@pytest.mark.parametrize("name", OP_NAMES)
def test_each_op_moves_annotations_with_the_image(image, name, level):
    for seed in range(2):  # both signs of the geometric ops
        np.random.seed(seed)
        tfm = AugmentOp(name, level).get_transform(image)
        out = tfm.apply_image(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        if name in GEOMETRIC:
            assert isinstance(tfm, AffineTransform)
            rotated = name.startswith(("Rotate", "Shear"))
            assert check_rectangle(tfm, image, BOX, contains=rotated) > 500
        else:  # colour ops and Cutout: boxes and masks stay where they were
            assert isinstance(tfm, T.ColorTransform)
            poly, bit = transform_annotations(tfm, BOX, image.shape, out.shape)
            np.testing.assert_array_equal(poly.gt_boxes.tensor[0].numpy(), BOX)
            drawn = np.zeros((H, W), bool)
            drawn[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
            np.testing.assert_array_equal(bit.gt_masks.tensor[0].numpy(), drawn)


def test_magnitudes_at_level_10(image):
    np.random.seed(0)
    args = {n: make_op_transform(n, 10, image.shape).args for n in OP_NAMES[:10]}
    assert args["Posterize"] == (4,) and args["Solarize"] == (0,) and args["SolarizeAdd"] == (110,)
    assert args["Color"] == args["Sharpness"] == (pytest.approx(1.9),)
    corner = np.array([[0.0, float(H)]])  # bottom-left corner
    angles, shifts = set(), set()
    for seed in range(8):
        np.random.seed(seed)
        rot = make_op_transform("Rotate_BBox", 10, image.shape).matrix
        angles.add(round(np.degrees(np.arctan2(-rot[0, 1], rot[0, 0])), 6))
        shear = make_op_transform("ShearX_BBox", 10, image.shape)
        shifts.add(round(float(shear.apply_coords(corner)[0, 0]), 6))
        tx = make_op_transform("TranslateX_BBox", 10, image.shape).matrix[0, 2]
        assert abs(tx) == pytest.approx(250 * W / 640)
        cut = make_op_transform("Cutout", 10, image.shape)
        assert isinstance(cut, CutoutTransform) and cut.x1 - cut.x0 == 2 * int(100 * W / 640)
    assert angles == {30.0, -30.0}
    assert sorted(shifts) == pytest.approx([-0.3 * H, 0.3 * H])


def test_autoaugment_policy_frequencies(image):
    """v0: one sub-policy of 5 per image, each op with its probability."""
    np.random.seed(0)
    aug, n = DetectionAutoAugment("v0"), 2000
    counts = collections.Counter()
    for _ in range(n):
        tfms = _flat(aug.get_transform(image))
        assert len(tfms) <= 2
        counts.update({type(t).__name__ if not hasattr(t, "name") else t.name for t in tfms})
    expected = {
        "Equalize": 0.2 * 0.8,
        "CutoutTransform": 0.2 * 0.8,
        "Color": 0.2,
        # TranslateX (0.6) + ShearX at level 0 (0.4) + ShearY (1.0) + Rotate (0.6)
        "AffineTransform": 0.2 * (0.6 + 0.4 + 1.0 + 0.6),
    }
    assert "Sharpness" not in counts  # probability 0
    for key, p in expected.items():
        assert abs(counts[key] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (key, counts[key])


def test_randaugment_draws_num_ops_at_the_magnitude(image):
    np.random.seed(0)
    aug = RandAugment(num_ops=3, magnitude=10)
    seen = collections.Counter()
    for _ in range(300):
        tfms = aug.get_transform(image).transforms
        assert len(tfms) == 3
        for t in tfms:
            if isinstance(t, PILColorOpTransform):
                seen[t.name] += 1
                if t.name == "Brightness":
                    assert t.args == (pytest.approx(1.9),)
            else:
                seen[type(t).__name__] += 1
    # 10 PIL ops, Cutout, 5 affine ops and TF's identity slot, uniformly over 17 slots
    assert len(seen) == 13 and seen["AffineTransform"] > 5 * 900 / 17 * 0.7
    assert abs(seen["NoOpTransform"] - 900 / 17) < 4 * np.sqrt(900 / 17)


def test_randaugment_on_the_drawn_rectangle(image):
    """N=2 geometric-only RandAugment at magnitude 6: annotations follow the composed ops."""
    aug = RandAugment(num_ops=2, magnitude=6, ops=GEOMETRIC)
    for seed in range(6):
        np.random.seed(seed)
        check_rectangle(aug.get_transform(image), image, BOX, contains=True)


def test_seeded_runs_repeat(image):
    outs = []
    for seed in (3, 3, 4):
        np.random.seed(seed)
        inp = T.AugInput(image.copy())
        T.AugmentationList([RandAugment(2, 10), DetectionAutoAugment("v1")])(inp)
        outs.append(inp.image)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_bgr_colour_ops(image):
    np.random.seed(0)
    rgb = AugmentOp("Color", 8, image_format="RGB").get_transform(image).apply_image(image)
    bgr = AugmentOp("Color", 8, image_format="BGR").get_transform(image)
    np.testing.assert_array_equal(bgr.apply_image(image[..., ::-1].copy())[..., ::-1], rgb)


def test_bad_values_are_named():
    with pytest.raises(KeyError, match="Flip_Only_BBoxes"):
        AugmentOp("Flip_Only_BBoxes", 5)
    with pytest.raises(ValueError, match="level=11"):
        AugmentOp("Rotate_BBox", 11)
    with pytest.raises(KeyError, match="AUTOAUG_POLICY='v9'"):
        DetectionAutoAugment("v9")
    with pytest.raises(ValueError, match="RANDAUG_MAGNITUDE=30"):
        RandAugment(2, 30)
    with pytest.raises(ValueError, match="RANDAUG_NUM_OPS=0"):
        RandAugment(0, 10)


def test_randaugment_uses_tfs_detection_constants(image):
    """TF Model Garden's RandAugment.build_for_detection: translate 100 px and a Cutout
    half-width of 40 px at magnitude 10 (here for a 640 px image, scaled to the image);
    detection AutoAugment keeps 250 and 100."""
    aug = RandAugment(num_ops=1, magnitude=10, ops=("TranslateX_BBox", "Cutout"))
    assert aug.consts == (100.0, 40.0) and aug.identity_slot
    shifts, widths = set(), set()
    for seed in range(20):
        np.random.seed(seed)
        tfm = aug.get_transform(image).transforms[0]
        if isinstance(tfm, CutoutTransform):
            widths.add(tfm.x1 - tfm.x0)
        elif isinstance(tfm, AffineTransform):
            shifts.add(round(abs(float(tfm.matrix[0, 2])), 6))
    assert widths == {2 * int(40 * W / 640)} and shifts == {round(100 * W / 640, 6)}
    assert abs(make_op_transform("TranslateX_BBox", 10, image.shape).matrix[0, 2]) == (
        pytest.approx(250 * W / 640)
    )
    np.random.seed(0)
    no_identity = RandAugment(num_ops=4, magnitude=5, identity_slot=False)
    assert not any(
        isinstance(t, T.NoOpTransform)
        for _ in range(100)
        for t in no_identity.get_transform(image).transforms
    )
