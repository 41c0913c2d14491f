"""
LOCA's position targets: against Detectron2's own geometric transforms (crop, resize, flip) for
random crop pairs, flips included, and known pairs.
"""

import math

import numpy as np
import pytest
import torch
from detectron2.data.transforms import ScaleTransform
from fvcore.transforms.transform import CropTransform, HFlipTransform, TransformList
from hypothesis import given, settings
from hypothesis import strategies as st

from detpre.modeling.loca.patch_positions import patch_position_targets


def _view_transform(box, flipped, side):
    """Original image -> a square view of ``side`` resized from ``box`` (and mirrored)."""
    x0, y0, x1, y1 = box
    # The original image size only matters to the inverse crop (a padding), not to coordinates.
    crop = CropTransform(x0, y0, x1 - x0, y1 - y0, orig_w=1000, orig_h=1000)
    tfms = [crop, ScaleTransform(y1 - y0, x1 - x0, side, side)]
    if flipped:
        tfms.append(HFlipTransform(side))
    return TransformList(tfms)


def _direct(query_box, query_flip, query_grid, ref_box, ref_flip, ref_grid, side=224.0):
    """Per cell: centre in the query view -> original image -> reference view -> its cell."""
    h, w = query_grid
    big_h, big_w = ref_grid
    to_original = _view_transform(query_box, query_flip, side).inverse()
    to_ref = _view_transform(ref_box, ref_flip, side)
    targets, near_edge = [], []
    for i in range(h):
        for j in range(w):
            centre = np.array([[(j + 0.5) * side / w, (i + 0.5) * side / h]])
            x, y = to_ref.apply_coords(to_original.apply_coords(centre))[0]
            col, row = x / side * big_w, y / side * big_h
            near_edge.append(min(abs(col - round(col)), abs(row - round(row))) < 1e-6)
            inside = 0 <= x < side and 0 <= y < side
            targets.append(math.floor(row) * big_w + math.floor(col) if inside else -1)
    return targets, near_edge


boxes = st.tuples(
    st.integers(0, 300), st.integers(0, 300), st.integers(8, 400), st.integers(8, 400)
).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@settings(max_examples=150, deadline=None)
@given(
    query=boxes,
    ref=boxes,
    flips=st.tuples(st.booleans(), st.booleans()),
    grid=st.sampled_from([(14, 14), (6, 6), (5, 7)]),
)
def test_random_crop_pairs_match_detectron2_transforms(query, ref, flips, grid):
    got = patch_position_targets(
        torch.tensor([query]), torch.tensor([flips[0]]), grid,
        torch.tensor([ref]), torch.tensor([flips[1]]), (14, 14),
    )  # fmt: skip
    assert got.shape == (1, grid[0] * grid[1]) and got.dtype == torch.int64
    expected, near_edge = _direct(query, flips[0], grid, ref, flips[1], (14, 14))
    for g, e, edge in zip(got[0].tolist(), expected, near_edge):
        if not edge:  # a centre on a cell border may round either way
            assert g == e
        assert -1 <= g < 196


def test_batch_of_pairs_is_rowwise():
    gen = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 100, (6, 2), generator=gen).float()
    wh = torch.randint(20, 200, (6, 2), generator=gen).float()
    q = torch.cat([xy, xy + wh], dim=1)
    r = q.roll(1, dims=0)
    qf = torch.tensor([True, False, True, False, True, False])
    rf = torch.tensor([False, False, True, True, False, True])
    batch = patch_position_targets(q, qf, (6, 6), r, rf, (14, 14))
    for n in range(6):
        one = patch_position_targets(
            q[n : n + 1], qf[n : n + 1], (6, 6), r[n : n + 1], rf[n : n + 1], (14, 14)
        )
        assert torch.equal(batch[n], one[0])


def test_known_pairs():
    box = torch.tensor([[10.0, 20.0, 234.0, 244.0]])
    no, yes = torch.tensor([False]), torch.tensor([True])
    grid = torch.arange(196).view(14, 14)
    # The reference itself: every cell its own index; mirrored: each row reversed.
    assert torch.equal(
        patch_position_targets(box, no, (14, 14), box, no, (14, 14))[0], grid.flatten()
    )
    assert torch.equal(
        patch_position_targets(box, yes, (14, 14), box, no, (14, 14))[0], grid.flip(1).flatten()
    )
    # Both mirrored: the same cells again.
    assert torch.equal(
        patch_position_targets(box, yes, (14, 14), box, yes, (14, 14))[0], grid.flatten()
    )
    # The left half of the reference at the same grid: column j lies in reference column j // 2.
    half = torch.tensor([[10.0, 20.0, 122.0, 244.0]])
    cols = torch.arange(14) // 2
    expected = (torch.arange(14)[:, None] * 14 + cols[None, :]).flatten()
    assert torch.equal(patch_position_targets(half, no, (14, 14), box, no, (14, 14))[0], expected)
    # A disjoint crop: everything ignored.
    far = torch.tensor([[300.0, 300.0, 400.0, 400.0]])
    assert (patch_position_targets(far, no, (6, 6), box, no, (14, 14)) == -1).all()


def test_bad_boxes():
    good = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="Empty query crop box"):
        patch_position_targets(
            torch.tensor([[5.0, 0.0, 5.0, 10.0]]), [False], (2, 2), good, [False], (2, 2)
        )
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        patch_position_targets(good, [False], (2, 2), torch.zeros(2, 4), [False, False], (2, 2))
