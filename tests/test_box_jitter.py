import itertools
import math

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detpre.config import add_detpre_config
from detpre.modeling.ssl import AnchorBoxJitter


def _jitter(**overrides):
    cfg = get_cfg()
    add_detpre_config(cfg)
    for k, v in overrides.items():
        setattr(cfg.INSLOC, k, v)
    return AnchorBoxJitter(cfg)


JITTER = _jitter()


def _reference_anchors(
    h, w, stride=16, sizes=(32, 64, 128, 256), ratios=(0.5, 0.75, 1.0, 1.5, 2.0)
):
    """Anchors centred on the stride grid (offset 0), area size^2, height / width = ratio."""
    out = []
    for y, x in itertools.product(range(math.ceil(h / stride)), range(math.ceil(w / stride))):
        for s, r in itertools.product(sizes, ratios):
            aw = math.sqrt(s * s / r)
            ah = aw * r
            cx, cy = x * stride, y * stride
            out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return np.array(out)


def _iou(a, b):
    """IoU of one box a (4,) with boxes b (M, 4)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_anchor_grid_from_config():
    anchors = JITTER.anchors((70, 100)).tensor.numpy()
    ref = _reference_anchors(70, 100)
    assert anchors.shape == (5 * 7 * 20, 4)
    # the same set of anchors as the independent construction
    dist = np.abs(anchors[:, None, :] - ref[None, :, :]).max(axis=2)
    assert dist.min(axis=1).max() < 1e-3 and dist.min(axis=0).max() < 1e-3

    small = _jitter(BOX_AUG_STRIDE=32, BOX_AUG_SIZES=(64,), BOX_AUG_ASPECT_RATIOS=(1.0,))
    assert small.anchors((64, 96)).tensor.shape == (2 * 3, 4)
    assert _jitter(BOX_AUG_IOU=0.7).iou_threshold == 0.7
    assert JITTER.state_dict() == {}


@st.composite
def _box_in_image(draw):
    h = draw(st.integers(32, 256))
    w = draw(st.integers(32, 256))
    x0 = draw(st.floats(0, w - 4))
    y0 = draw(st.floats(0, h - 4))
    x1 = draw(st.floats(x0 + 2, w))
    y1 = draw(st.floats(y0 + 2, h))
    return (h, w), [x0, y0, x1, y1]


@settings(max_examples=150, deadline=None)
@given(_box_in_image(), st.integers(0, 2**31 - 1))
@example(((64, 64), [10.0, 10.0, 13.0, 13.0]), 0)  # no anchor passes 0.5: the best one
@example(((200, 120), [0.0, 0.0, 120.0, 200.0]), 1)
def test_jittered_box_overlaps_or_is_the_best_anchor(case, seed):
    (h, w), box = case
    gen = torch.Generator().manual_seed(seed)
    out = JITTER([Boxes(torch.tensor([box]))], [(h, w)], generator=gen)[0].tensor.numpy()[0]
    anchors = _reference_anchors(h, w)
    ious = _iou(np.array(box), anchors)
    out_iou = _iou(np.array(box), out[None])[0]
    # the output is one of the grid's anchors
    assert np.abs(anchors - out).max(axis=1).min() < 1e-3
    if (ious > 0.5).any():
        assert out_iou > 0.5
    else:
        assert out_iou >= ious.max() - 1e-5


def test_draws_are_uniform_over_candidates():
    box = torch.tensor([[40.0, 30.0, 150.0, 140.0]])
    anchors = JITTER.anchors((192, 192)).tensor
    ious = _iou(box[0].numpy(), anchors.numpy())
    candidates = {tuple(np.round(a, 2)) for a in anchors.numpy()[ious > 0.5]}
    assert len(candidates) > 5
    gen = torch.Generator().manual_seed(0)
    draws = 400 * len(candidates)
    boxes = JITTER([Boxes(box)] * draws, [(192, 192)] * draws, generator=gen)
    counts = {}
    for b in boxes:
        key = tuple(np.round(b.tensor.numpy()[0], 2))
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) == candidates
    freq = np.array(list(counts.values())) / draws
    assert np.all(np.abs(freq - 1 / len(candidates)) < 0.5 / len(candidates))


def test_several_boxes_per_view_and_empty():
    boxes = Boxes(torch.tensor([[0.0, 0.0, 60.0, 60.0], [100.0, 20.0, 180.0, 60.0]]))
    out = JITTER([boxes, Boxes(torch.zeros(0, 4))], [(200, 200), (64, 64)])
    assert out[0].tensor.shape == (2, 4) and out[1].tensor.shape == (0, 4)
    for true, jit in zip(boxes.tensor.numpy(), out[0].tensor.numpy()):
        assert _iou(true, jit[None])[0] > 0.5
