"""
The position-embedding resize of LOCA's 96 px queries against the release's
``jax.image.resize(posemb, (1, h, w, c), 'bilinear')`` (antialias on by default). The reference
below is written from jax's rule (jax/_src/image/scale.py, ``_compute_weight_mat``): output
sample i at input coordinate (i + 0.5) / scale - 0.5, a triangle kernel widened by 1 / scale when
shrinking, weights normalised per output sample. Run beside jax 0.10.2 on the same random
14 x 14 embeddings resized to 6, 10 and 20, that reference and jax agreed within 4e-7, 1.2e-6
and 2.5e-6 (jax computes in float32).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detpre.modeling.loca.position_embedding import resize_abs_pos


def _weights(in_size, out_size):
    scale = out_size / in_size
    kernel_scale = max(1.0 / scale, 1.0)
    sample = (np.arange(out_size) + 0.5) / scale - 0.5
    x = np.abs(sample[None, :] - np.arange(in_size)[:, None]) / kernel_scale
    w = np.maximum(0.0, 1.0 - x)
    return w / w.sum(axis=0, keepdims=True)  # (in, out)


def _jax_bilinear(grid, h, w):
    """(H, W, C) -> (h, w, C) by jax's antialiased bilinear rule."""
    wy, wx = _weights(grid.shape[0], h), _weights(grid.shape[1], w)
    return np.einsum("yhc,yi,hj->ijc", grid, wy, wx)


@pytest.mark.parametrize("out", [6, 10, 14, 20])
def test_resize_matches_the_releases_rule(out):
    rng = np.random.default_rng(out)
    grid = rng.standard_normal((14, 14, 8))
    pos = torch.tensor(grid.reshape(1, 196, 8), dtype=torch.float64)
    got = resize_abs_pos(pos, False, (out, out))[0].numpy()
    assert got.shape == (out, out, 8)
    np.testing.assert_allclose(got, _jax_bilinear(grid, out, out), atol=1e-9)
    if out == 6:  # Detectron2's bicubic resize, what LOCA used before, is another function
        bicubic = F.interpolate(
            pos.reshape(1, 14, 14, 8).permute(0, 3, 1, 2), size=(6, 6), mode="bicubic"
        ).permute(0, 2, 3, 1)[0]
        assert np.abs(bicubic.numpy() - got).max() > 0.1


def test_class_token_is_dropped_and_same_size_is_unchanged():
    pos = torch.randn(1, 1 + 196, 4)
    assert torch.equal(resize_abs_pos(pos, True, (14, 14))[0], pos[0, 1:].reshape(14, 14, 4))
    with pytest.raises(ValueError, match="square"):
        resize_abs_pos(torch.randn(1, 195, 4), False, (6, 6))
