"""
Sinkhorn-Knopp balancing: against an independent scaling-vector computation, rows and columns
normalised, and column sums all-reduced in a real 2-process gloo run (the concatenated result
equals one process balancing the concatenated batch).
"""

import os

import numpy as np
import pytest
import torch
from detectron2.utils import comm

from detpre.engine import launch
from detpre.modeling.loca.sinkhorn import sinkhorn_knopp

WORLD = 2


def _scaling_vectors(p, num_iters):
    """Q = diag(u) P diag(v) with v = 1 / (P^T u), u = 1 / (P v), columns first (float64)."""
    p = np.asarray(p, dtype=np.float64)
    u = np.ones(p.shape[0])
    for _ in range(num_iters):
        v = 1.0 / (p.T @ u)
        u = 1.0 / (p @ v)
    return u[:, None] * p * v[None, :]


def _assignments(n, k, seed, temperature=0.5):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=gen) / temperature, dim=1)


@pytest.mark.parametrize("num_iters", [1, 3, 10])
def test_matches_scaling_vectors(num_iters):
    p = _assignments(40, 16, seed=num_iters)
    q = sinkhorn_knopp(p, num_iters)
    assert q.dtype == torch.float32 and q.shape == p.shape
    np.testing.assert_allclose(
        q.numpy(), _scaling_vectors(p.numpy(), num_iters), rtol=1e-4, atol=1e-7
    )


def test_rows_and_columns_normalised():
    n, k = 60, 12
    p = _assignments(n, k, seed=0)
    before = (p.sum(dim=0) - n / k).abs().max()
    q3 = sinkhorn_knopp(p, 3)
    torch.testing.assert_close(q3.sum(dim=1), torch.ones(n))
    # Three iterations move the prototype masses towards N / K each...
    assert (q3.sum(dim=0) - n / k).abs().max() < 0.5 * before
    # ...and many iterations reach it: a doubly-normalised plan.
    q = sinkhorn_knopp(p, 300)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n))
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), n / k), rtol=1e-3, atol=1e-3)
    assert torch.equal(p, _assignments(n, k, seed=0))  # the input is left alone


def test_bad_input():
    with pytest.raises(ValueError, match="N, K"):
        sinkhorn_knopp(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="at least one iteration"):
        sinkhorn_knopp(torch.rand(2, 3), num_iters=0)


def _worker(out_dir):
    rank = comm.get_rank()
    p = _assignments(24, 10, seed=123)
    mine = p[rank * 12 : (rank + 1) * 12]
    torch.save(
        {
            "global": sinkhorn_knopp(mine, 3),
            "local": sinkhorn_knopp(mine, 3, distributed=False),
            "world": comm.get_world_size(),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


def test_two_process_columns_all_reduced(tmp_path):
    launch(_worker, num_gpus_per_machine=WORLD, dist_url="auto", args=(str(tmp_path),))
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert all(r["world"] == WORLD for r in res)
    p = _assignments(24, 10, seed=123)
    together = torch.cat([r["global"] for r in res])
    torch.testing.assert_close(together, sinkhorn_knopp(p, 3))
    # Balancing each half alone is a different plan.
    apart = torch.cat([r["local"] for r in res])
    assert not torch.allclose(apart, together, atol=1e-4)
