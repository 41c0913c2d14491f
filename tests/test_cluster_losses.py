"""LOCA's cluster losses against direct computations, in one process and across two."""

import math
import os

import numpy as np
import pytest
import torch
from detectron2.utils import comm

from detpre.engine import launch
from detpre.modeling.loca.cluster_losses import masked_soft_cross_entropy, mean_entropy_penalty

WORLD = 2


def _logits(n, k, seed):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 3


def test_masked_soft_cross_entropy_matches_loop():
    logits = _logits(7, 5, 0).requires_grad_()
    targets = torch.softmax(_logits(7, 5, 1), dim=1).requires_grad_()
    valid = torch.tensor([True, False, True, True, False, True, True])
    loss = masked_soft_cross_entropy(logits, targets, valid)
    total = 0.0
    x, t = logits.detach().double().numpy(), targets.detach().double().numpy()
    for i in np.flatnonzero(valid.numpy()):
        log_z = math.log(np.exp(x[i] - x[i].max()).sum()) + x[i].max()
        total += -sum(t[i, k] * (x[i, k] - log_z) for k in range(5))
    assert loss.item() == pytest.approx(total / 5, rel=1e-5)
    loss.backward()
    assert targets.grad is None  # the teacher's targets take no gradient
    assert torch.all(logits.grad[~valid] == 0) and logits.grad[valid].abs().sum() > 0


def test_masked_soft_cross_entropy_without_valid_rows_is_zero():
    logits = _logits(3, 4, 2).requires_grad_()
    loss = masked_soft_cross_entropy(
        logits, torch.full((3, 4), 0.25), torch.zeros(3, dtype=torch.bool)
    )
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_mean_entropy_penalty():
    logits = _logits(9, 6, 3).requires_grad_()
    mean = torch.softmax(logits.detach().double(), dim=1).mean(dim=0).numpy()
    value = mean_entropy_penalty(logits)
    assert value.item() == pytest.approx(float((mean * np.log(mean)).sum()), rel=1e-5)
    # Uniform mean prediction: -log K, the minimum; one prototype for all: 0, the maximum.
    assert mean_entropy_penalty(torch.zeros(4, 6)).item() == pytest.approx(-math.log(6), rel=1e-6)
    collapsed = torch.full((4, 6), -50.0)
    collapsed[:, 2] = 50.0
    assert mean_entropy_penalty(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    # A gradient step on it spreads the mean prediction.
    value.backward()
    stepped = logits.detach() - 0.5 * logits.grad
    assert mean_entropy_penalty(stepped) < value


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        masked_soft_cross_entropy(
            torch.zeros(3, 4), torch.zeros(3, 5), torch.ones(3, dtype=torch.bool)
        )


def _worker(out_dir):
    rank = comm.get_rank()
    logits = _logits(8, 5, 10)[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
    value = mean_entropy_penalty(logits)
    value.backward()
    torch.save(
        {"value": value.detach(), "grad": logits.grad}, os.path.join(out_dir, f"rank{rank}.pt")
    )


def test_two_process_mean_over_ranks(tmp_path):
    launch(_worker, num_gpus_per_machine=WORLD, dist_url="auto", args=(str(tmp_path),))
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    logits = _logits(8, 5, 10).requires_grad_()
    value = mean_entropy_penalty(logits)
    value.backward()
    for r in res:  # every rank sees the penalty of the global mean prediction
        torch.testing.assert_close(r["value"], value.detach())
    # Averaged over ranks (as DDP does), the local gradients are the global loss's gradient.
    grads = torch.cat([r["grad"] for r in res]) / WORLD
    torch.testing.assert_close(grads, logits.grad)
