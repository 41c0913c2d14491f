import numpy as np
import pytest
from detectron2.structures import BoxMode
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageOps

from detpre.data.mappers import BoxDomainMapper
from detpre.data.transforms import COLOR_OPS, RandomColorOp, apply_color_op
from detpre.engine import get_detpre_cfg

MARKER = 12  # side of the red square drawn in the top-left corner of every test image


def _mapper(**kw):
    args = dict(
        image_format="RGB", min_sizes=(48, 64, 96), max_size=120, flip_prob=0.5,
        color_magnitude=10,
    )  # fmt: skip
    args.update(kw)
    mapper = BoxDomainMapper(**args)
    # Identity colours only, so that the red marker tells whether a view is flipped.
    mapper.color = RandomColorOp(ops=("identity",))
    return mapper


class _Decoded:
    """What make_views reads of an ImageFile, over an array already decoded."""

    def __init__(self, array):
        self.array, self.shape = array, array.shape[:2]

    def decode(self, reduction=1.0):
        return self.array


def _image(h, w):
    image = np.full((h, w, 3), 90, dtype=np.uint8)
    image[:MARKER, :MARKER] = (255, 0, 0)
    return _Decoded(image)


def _is_flipped(view):
    image = view["image"].numpy().transpose(1, 2, 0).astype(int)
    red = (image[..., 0] > 200) & (image[..., 1] < 60)
    xs = np.nonzero(red)[1]
    assert len(xs), "marker lost"
    return xs.mean() > image.shape[1] / 2


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(40, 90),
    w=st.integers(40, 90),
    num=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_ids_and_boxes_follow_resize_and_flip_in_both_views(h, w, num, seed):
    rng = np.random.default_rng(seed)
    np.random.seed(seed % 2**32)
    x0, y0 = rng.uniform(0, w - 8, num), rng.uniform(0, h - 8, num)
    bw, bh = rng.uniform(4, w - x0), rng.uniform(4, h - y0)
    boxes = np.stack([x0, y0, bw, bh], 1)
    anns = [{"bbox": b.tolist(), "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0} for b in boxes]
    mapper = _mapper()
    out = mapper.make_views(_image(h, w), {"file_name": "x.jpg", "annotations": anns})
    assert len(out) == 2
    expected_xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    for view in out:
        vh, vw = view["image"].shape[1:]
        inst = view["instances"]
        assert inst.image_size == (vh, vw)
        assert inst.gt_ids.tolist() == list(range(num))
        # No crop: the view is the whole image rescaled (shorter side from min_sizes, longer
        # side at most max_size), so the scale is the view's size over the image's.
        sx, sy = vw / w, vh / h
        assert sx == pytest.approx(sy, rel=0.05)
        exp = expected_xyxy * np.array([sx, sy, sx, sy])
        if _is_flipped(view):
            exp = np.stack([vw - exp[:, 2], exp[:, 1], vw - exp[:, 0], exp[:, 3]], 1)
        np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), exp, atol=1e-3, rtol=1e-4)


def test_views_are_independent_and_images_without_proposals_are_skipped():
    np.random.seed(0)
    mapper = _mapper(min_sizes=tuple(range(40, 120, 8)), max_size=400)
    d = {"file_name": "x.jpg", "annotations": [{"bbox": [5, 5, 20, 20], "bbox_mode": 1}]}
    shapes = {
        tuple(v["image"].shape) for _ in range(10) for v in mapper.make_views(_image(64, 64), d)
    }
    assert len(shapes) > 1
    assert mapper.make_views(_image(64, 64), {"file_name": "y.jpg", "annotations": []}) is None
    assert mapper.num_without_proposals == 1


def test_max_proposals_keeps_the_first_boxes():
    mapper = _mapper(max_proposals=2)
    anns = [{"bbox": [i, i, 20, 20], "bbox_mode": BoxMode.XYWH_ABS} for i in range(5)]
    views = mapper.make_views(_image(64, 64), {"file_name": "x.jpg", "annotations": anns})
    assert [len(v["instances"]) for v in views] == [2, 2]


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    mapper = _mapper()
    anns = [{"bbox": [1, 1, 20, 20], "bbox_mode": BoxMode.XYWH_ABS}]
    assert mapper({"file_name": str(bad), "annotations": anns}) is None
    assert mapper.num_skipped == 1


def test_built_from_config_with_the_release_sizes():
    cfg = get_detpre_cfg()
    cfg.SSL.MAPPER = "BoxDomainMapper"
    mapper = BoxDomainMapper(cfg, is_train=True)
    assert mapper.resize.short_edge_length == (640, 672, 704, 736, 768, 800)
    assert mapper.resize.max_size == 1333
    assert mapper.color.ops == COLOR_OPS and len(COLOR_OPS) == 9
    with pytest.raises(ValueError, match="training views only"):
        BoxDomainMapper(cfg, is_train=False)
    with pytest.raises(ValueError, match="ALIGNDET.MIN_SIZES"):
        _mapper(min_sizes=())


@pytest.mark.parametrize("name", COLOR_OPS)
def test_colour_ops_match_pil_and_keep_geometry(name):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = apply_color_op(image, name, 5)
    assert out.shape == image.shape and out.dtype == np.uint8
    pil = Image.fromarray(image)
    expected = {
        "identity": pil,
        "autocontrast": ImageOps.autocontrast(pil),
        "equalize": ImageOps.equalize(pil),
        "solarize": ImageOps.solarize(pil, 128),
        "posterize": ImageOps.posterize(pil, 2),
        "color": ImageEnhance.Color(pil).enhance(1.0),
        "contrast": ImageEnhance.Contrast(pil).enhance(1.0),
        "brightness": ImageEnhance.Brightness(pil).enhance(1.0),
        "sharpness": ImageEnhance.Sharpness(pil).enhance(1.0),
    }[name]
    np.testing.assert_array_equal(out, np.asarray(expected))
    tfm = RandomColorOp(ops=(name,)).get_transform(image)
    box = np.array([[1.0, 2.0, 10.0, 12.0]])
    np.testing.assert_array_equal(tfm.apply_box(box), box)
    with pytest.raises(ValueError, match="magnitude"):
        apply_color_op(image, name, 11)


def test_random_colour_op_draws_every_op():
    np.random.seed(0)
    aug = RandomColorOp()
    image = np.zeros((4, 4, 3), np.uint8)
    kinds = {type(aug.get_transform(image)).__name__ for _ in range(200)}
    assert kinds == {"NoOpTransform", "ColorTransform"}
    with pytest.raises(ValueError, match="Unknown"):
        RandomColorOp(ops=("blur",))
