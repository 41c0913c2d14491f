import numpy as np
import pytest
from detectron2.data import transforms as T
from detectron2.structures import polygons_to_bitmask
from drawn_rectangle import FILL, check_rectangle, draw

from detpre.data.transforms.geometric_ops import (
    AffineTransform,
    PolygonClipFixedSizeCrop,
    clip_polygons,
    rotate_transform,
    shear_transform,
    translate_transform,
)

H, W = 60, 80
BOX = (20, 15, 50, 35)


def _area(poly):
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_clip_polygons_square():
    square = np.array([[-10, -10], [50, -10], [50, 50], [-10, 50]], np.float64)
    (clipped,) = clip_polygons([square], 40, 30)
    assert _area(clipped) == pytest.approx(40 * 30)
    assert clipped[:, 0].min() == 0 and clipped[:, 0].max() == 40
    assert clipped[:, 1].min() == 0 and clipped[:, 1].max() == 30


def test_clip_polygons_against_rasterization():
    # A concave "U" crossing the right and bottom edges, a triangle inside, one fully outside.
    u_shape = np.array(
        [[10, 5], [20, 5], [20, 40], [50, 40], [50, 5], [60, 5], [60, 50], [10, 50]], np.float64
    )
    inside = np.array([[2, 2], [8, 2], [5, 9]], np.float64)
    outside = np.array([[100, 100], [120, 100], [110, 130]], np.float64)
    w, h = 55, 45
    clipped = clip_polygons([u_shape, inside, outside], w, h)
    assert len(clipped) == 2
    np.testing.assert_allclose(clipped[1], inside)
    for poly in clipped:
        assert poly[:, 0].min() >= 0 and poly[:, 0].max() <= w
        assert poly[:, 1].min() >= 0 and poly[:, 1].max() <= h
    # The rasterizer clips to the image itself: the masks must agree.
    np.testing.assert_array_equal(
        polygons_to_bitmask([clipped[0].ravel()], h, w),
        polygons_to_bitmask([u_shape.ravel()], h, w),
    )


def test_rotate_90_is_numpy_rot90():
    img = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    out = rotate_transform(32, 32, 90.0).apply_image(img)
    np.testing.assert_array_equal(out, np.rot90(img, 1))
    # the top-left corner goes to the bottom-left corner
    np.testing.assert_allclose(
        rotate_transform(32, 32, 90.0).apply_coords(np.array([[0.0, 0.0]])),
        [[0.0, 32.0]],
        atol=1e-9,
    )


def test_integer_translation_shifts_pixels():
    img = np.random.RandomState(1).randint(0, 256, (H, W, 3)).astype(np.uint8)
    out = translate_transform(H, W, 7, horizontal=True, fill=128).apply_image(img)
    np.testing.assert_array_equal(out[:, 7:], img[:, :-7])
    assert (out[:, :7] == 128).all()
    out = translate_transform(H, W, -5, horizontal=False, fill=3).apply_image(img)
    np.testing.assert_array_equal(out[:-5], img[5:])
    assert (out[-5:] == 3).all()


def test_coords_follow_a_dot():
    # A dot at pixel (x=30, y=20), centre (30.5, 20.5): every op puts it where apply_coords says.
    img = np.zeros((H, W), np.uint8)
    img[20, 30] = 255
    for tfm in (
        rotate_transform(H, W, 23.0, fill=0),
        shear_transform(H, W, 0.25, horizontal=True, fill=0),
        shear_transform(H, W, -0.3, horizontal=False, fill=0),
        translate_transform(H, W, -12.0, horizontal=True, fill=0),
    ):
        out = tfm.apply_image(img).astype(np.float64)
        ys, xs = np.mgrid[:H, :W]
        centroid = [(out * (xs + 0.5)).sum() / out.sum(), (out * (ys + 0.5)).sum() / out.sum()]
        np.testing.assert_allclose(
            centroid, tfm.apply_coords(np.array([[30.5, 20.5]]))[0], atol=0.1
        )


@pytest.mark.parametrize(
    "tfm,contains",
    [
        (translate_transform(H, W, 13.0, horizontal=True), False),
        (translate_transform(H, W, -9.5, horizontal=False), False),
        (translate_transform(H, W, 45.0, horizontal=True), False),  # partly out of the image
        (shear_transform(H, W, 0.3, horizontal=True), True),
        (shear_transform(H, W, -0.3, horizontal=False), True),
        (rotate_transform(H, W, 30.0), True),
        (rotate_transform(H, W, -30.0), True),
    ],
)
def test_drawn_rectangle(tfm, contains):
    img = draw(H, W, BOX)
    assert check_rectangle(tfm, img, BOX, contains=contains) > 100


def test_fill_and_mask_fill():
    tfm = translate_transform(H, W, 10.0, horizontal=True, fill=128)
    assert (tfm.apply_image(draw(H, W, BOX))[:, :10] == FILL).all()
    assert (tfm.apply_segmentation(np.ones((H, W), np.uint8))[:, :10] == 0).all()


def test_fixed_size_crop_pads_masks_with_zero():
    img = draw(H, W, BOX)
    for seed in range(3):
        np.random.seed(seed)
        ours = PolygonClipFixedSizeCrop((50, 100)).get_transform(img)
        np.random.seed(seed)
        ref = T.FixedSizeCrop((50, 100), seg_pad_value=0).get_transform(img)
        # Detectron2's padding (the same image where the crop offsets agree)
        assert ours.apply_image(img).shape == ref.apply_image(img).shape == (50, 100, 3)
        mask = np.ones((H, W), np.uint8)
        seg = ours.apply_segmentation(mask)
        assert seg.shape == (50, 100) and seg.sum() == 50 * W  # the padding is background
    # polygons are clipped to the crop (no shapely needed) and still match the pixels
    for seed in range(4):
        np.random.seed(seed)
        tfm = PolygonClipFixedSizeCrop((30, 40)).get_transform(img)
        check_rectangle(tfm, img, BOX)


def test_fixed_size_crop_offsets_are_drawn_per_axis_as_tf():
    """The TF rule (resize_and_crop_image): offset = int(max_offset * U(0, 1)) per axis, two
    independent draws. Detectron2's one shared draw correlates the axes at ~1."""
    img = np.zeros((400, 300, 3), np.uint8)
    rng_state = np.random.RandomState(5)
    offsets, expected = [], []
    for _ in range(2000):
        np.random.seed(rng_state.randint(2**31))
        state = np.random.get_state()
        crop = PolygonClipFixedSizeCrop((100, 200)).get_transform(img).transforms[0]
        np.random.set_state(state)
        y, x = (np.array([300, 100]) * np.random.uniform(0.0, 1.0, size=2)).astype(int)
        offsets.append((crop.y0, crop.x0))
        expected.append((y, x))
    offsets = np.array(offsets, float)
    assert (offsets == np.array(expected)).all()
    assert offsets[:, 0].max() <= 300 and offsets[:, 1].max() <= 100
    corr = np.corrcoef(offsets[:, 0] / 300, offsets[:, 1] / 100)[0, 1]
    assert abs(corr) < 0.07  # independent axes (Detectron2's FixedSizeCrop: corr 1)
    shared = []
    for _ in range(200):
        t = T.FixedSizeCrop((100, 200)).get_transform(img).transforms[0]
        shared.append((t.y0 / 300, t.x0 / 100))
    assert np.corrcoef(np.array(shared).T)[0, 1] > 0.99


def test_bad_matrix_and_size():
    with pytest.raises(ValueError, match="2x3"):
        AffineTransform(np.eye(3), H, W)
    with pytest.raises(ValueError, match="size"):
        rotate_transform(H, W, 10.0).apply_image(np.zeros((H + 1, W, 3), np.uint8))
