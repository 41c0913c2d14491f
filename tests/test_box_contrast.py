import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from detpre.modeling.aligndet.box_contrast import box_id_contrast


def _reference(q, q_ids, k, k_ids, t, background=None):
    """The release's loop: per id, every (query, key) pair against all other-id RoIs (and, for
    RetinaNet, the sampled background anchors of both views, label 256 in its head)."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    bg = q[:0] if background is None else F.normalize(background, dim=1)
    total, num_ids = 0.0, 0
    for label in torch.unique(q_ids):
        query = q[q_ids == label]
        key = k[k_ids == label] if (k_ids == label).any() else query
        neg = torch.cat([q[q_ids != label], k[k_ids != label], bg]).detach()
        logits = []
        for kk in key:
            for qq in query:
                logits.append(torch.cat([(qq * kk).sum().view(1), neg @ qq]) / t)
        logits = torch.stack(logits)
        total = total + F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        num_ids += 1
    return total / num_ids


@settings(max_examples=25, deadline=None)
@given(
    nq=st.integers(1, 12),
    nk=st.integers(0, 12),
    num_ids=st.integers(1, 5),
    nb=st.sampled_from([None, 0, 1, 7]),
    t=st.sampled_from([0.2, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_reference_loop(nq, nk, num_ids, nb, t, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(nq, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(nk, 8, generator=gen, dtype=torch.float64)
    q_ids = torch.randint(0, num_ids, (nq,), generator=gen)
    k_ids = torch.randint(0, num_ids, (nk,), generator=gen)
    bg = None if nb is None else torch.randn(nb, 8, generator=gen).float()
    loss, acc = box_id_contrast(q.float(), q_ids, k.float(), k_ids, t, negatives=bg)
    ref = _reference(q.float(), q_ids, k.float(), k_ids, t, background=bg)
    torch.testing.assert_close(loss, torch.as_tensor(ref, dtype=loss.dtype), rtol=1e-4, atol=1e-5)
    assert 0.0 <= float(acc) <= 1.0


def test_gradient_flows_into_queries_only():
    q = torch.randn(6, 4, requires_grad=True)
    k = torch.randn(5, 4, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    loss, _ = box_id_contrast(q, ids, k, torch.tensor([0, 1, 1, 2, 3]), 0.5)
    loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad is None


def test_aligned_embeddings_score_full_accuracy_and_low_loss():
    base = torch.eye(4) * 10
    loss, acc = box_id_contrast(base, torch.arange(4), base.clone(), torch.arange(4), 0.5)
    assert acc == 1.0
    # Each positive scores 1 / 0.5 = 2 against 3 + 4 - 1 negatives at 0: log(1 + 6 e^-2).
    assert float(loss) == pytest.approx(torch.log(1 + 6 * torch.exp(torch.tensor(-2.0))).item())


def test_no_query_gives_zero_and_bad_shapes_are_named():
    loss, acc = box_id_contrast(
        torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long),
        torch.randn(3, 4), torch.arange(3), 0.5,
    )  # fmt: skip
    assert float(loss) == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="one D"):
        box_id_contrast(torch.randn(2, 4), torch.arange(2), torch.randn(2, 3), torch.arange(2), 1)
    with pytest.raises(ValueError, match="negatives must be"):
        box_id_contrast(
            torch.randn(2, 4), torch.arange(2), torch.randn(2, 4), torch.arange(2), 1,
            negatives=torch.randn(3, 5),
        )  # fmt: skip
    with pytest.raises(ValueError, match="temperature"):
        box_id_contrast(torch.randn(2, 4), torch.arange(2), torch.randn(2, 4), torch.arange(2), 0)
