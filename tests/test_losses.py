import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detpre.modeling.ssl import info_nce


def _reference(q, k, neg, t):
    """Explicit per-sample loops in float64."""
    q, k, neg = (x.astype(np.float64) for x in (q, k, neg))
    losses, correct = [], 0
    for i in range(q.shape[0]):
        logits = [sum(q[i, d] * k[i, d] for d in range(q.shape[1])) / t]
        for j in range(neg.shape[0]):
            logits.append(sum(q[i, d] * neg[j, d] for d in range(q.shape[1])) / t)
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        losses.append(log_z - logits[0])
        correct += int(logits[0] > max(logits[1:]))
    return sum(losses) / len(losses), correct / q.shape[0]


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_matches_explicit_loops(t):
    torch.manual_seed(0)
    q = F.normalize(torch.randn(6, 8), dim=1)
    k = F.normalize(q + 0.8 * torch.randn(6, 8), dim=1)
    neg = F.normalize(torch.randn(11, 8), dim=1)
    loss, acc = info_nce(q, k, neg, t)
    ref_loss, ref_acc = _reference(q.numpy(), k.numpy(), neg.numpy(), t)
    assert loss.shape == () and acc.shape == ()
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert acc.item() == pytest.approx(ref_acc)
    assert 0 < ref_acc < 1 or t == 1.0  # a non-trivial accuracy for the small temperatures


def test_accuracy_extremes():
    eye = torch.eye(4)
    loss, acc = info_nce(eye[:2], eye[:2], eye[2:], 0.2)
    assert acc.item() == 1.0
    assert loss.item() == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + 2)), rel=1e-6)
    _, acc = info_nce(eye[:2], eye[2:], eye[:2], 0.2)
    assert acc.item() == 0.0
    # a collapsed encoder: every embedding the same, every logit tied, nothing recognised
    same = F.normalize(torch.ones(3, 4), dim=1)
    loss, acc = info_nce(same[:2], same[:2], same, 0.2)
    assert acc.item() == 0.0
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_gradient_reaches_queries_only():
    torch.manual_seed(1)
    q = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    k = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    neg = F.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    loss, _ = info_nce(q, k, neg, 0.2)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and neg.grad is None


def test_shape_errors():
    with pytest.raises(ValueError, match="q and k"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 4), 0.2)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 3), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4), 0.0)
