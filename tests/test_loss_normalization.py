"""LossNormalizer and the student step: the formula, its gradients, resume, and the all-reduce of
the moving averages across two processes."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from detpre.engine import get_detpre_cfg, launch
from detpre.engine.trainer_base import DetpreTrainer
from detpre.selftrain import LossNormalizer, MixedBatch, StudentStep

# (L_h, L_p) of five steps, per rank of a two-process run.
LOSSES = {
    0: [(2.0, 8.0), (1.5, 6.0), (1.0, 7.0), (0.8, 3.0), (0.5, 2.5)],
    1: [(4.0, 2.0), (2.5, 4.0), (3.0, 1.0), (1.2, 5.0), (0.7, 1.5)],
}


def reference(losses, alpha, momentum):
    """The paper's formula, step by step, with plain floats: (L, ratio) per step."""
    out, avg_h, avg_p = [], None, None
    for h, p in losses:
        if avg_h is None:
            avg_h, avg_p = h, p
        else:
            avg_h = momentum * avg_h + (1 - momentum) * h
            avg_p = momentum * avg_p + (1 - momentum) * p
        ratio = avg_h / avg_p
        out.append(((h + alpha * ratio * p) / (1 + alpha), ratio))
    return out


@pytest.mark.parametrize("alpha,momentum", [(1.0, 0.9), (0.5, 0.0), (2.0, 0.99)])
def test_formula_and_gradients_against_reference(alpha, momentum):
    norm = LossNormalizer(alpha=alpha, momentum=momentum)
    for (h, p), (expected, ratio) in zip(LOSSES[0], reference(LOSSES[0], alpha, momentum)):
        lh = torch.tensor(h, requires_grad=True)
        lp = torch.tensor(p, requires_grad=True)
        loss = norm(lh, lp)
        loss.backward()
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        assert norm.ratio == pytest.approx(ratio, rel=1e-6)
        # The ratio is a constant: dL/dL_h = 1 / (1 + a), dL/dL_p = a * ratio / (1 + a).
        assert lh.grad.item() == pytest.approx(1 / (1 + alpha), rel=1e-6)
        assert lp.grad.item() == pytest.approx(alpha * ratio / (1 + alpha), rel=1e-6)


def test_disabled_is_plain_weighted_sum():
    norm = LossNormalizer(alpha=0.3, momentum=0.9, enabled=False)
    for h, p in LOSSES[1]:
        loss = norm(torch.tensor(h), torch.tensor(p))
        assert loss.item() == pytest.approx(h + 0.3 * p, rel=1e-6)


def test_state_dict_resumes_the_same_averages():
    full = LossNormalizer(alpha=1.0, momentum=0.9)
    first = LossNormalizer(alpha=1.0, momentum=0.9)
    for h, p in LOSSES[0][:3]:
        full(torch.tensor(h), torch.tensor(p))
        first(torch.tensor(h), torch.tensor(p))
    resumed = LossNormalizer(alpha=1.0, momentum=0.9)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for h, p in LOSSES[0][3:]:
        a = full(torch.tensor(h), torch.tensor(p))
        b = resumed(torch.tensor(h), torch.tensor(p))
        assert a.item() == b.item()


def test_from_config_and_bad_values():
    cfg = get_detpre_cfg()
    norm = LossNormalizer(cfg)
    # Appendix B of the paper: moving averages with decay 0.9997
    assert (norm.alpha, norm.momentum, norm.enabled) == (1.0, 0.9997, True)
    cfg.SELF_TRAIN.LOSS_NORM.ALPHA = -1.0
    with pytest.raises(ValueError, match="SELF_TRAIN.LOSS_NORM.ALPHA"):
        LossNormalizer(cfg)
    with pytest.raises(ValueError, match="SELF_TRAIN.LOSS_NORM.MOMENTUM"):
        LossNormalizer(alpha=1.0, momentum=1.0)


class ToyDetector(torch.nn.Module):
    """Loss dict of a linear model: loss_a = mean(w.x), loss_b = mean((w.x)^2) over the batch."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))

    def forward(self, batch):
        out = self.linear(torch.stack([d["x"] for d in batch]))
        return {"loss_a": out.mean(), "loss_b": (out**2).mean()}


def toy_batches(rank, steps):
    g = torch.Generator().manual_seed(100 + rank)
    return [
        MixedBatch(
            [{"x": torch.randn(3, generator=g)} for _ in range(2)],
            [{"x": torch.randn(3, generator=g)} for _ in range(2)],
        )
        for _ in range(steps)
    ]


def expected_weights(world, alpha, momentum, lr, steps):
    """Plain SGD on the mean over ranks of the normalized loss, the ratio a constant."""
    w = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    avg = None
    batches = [toy_batches(r, steps) for r in range(world)]
    for step in range(steps):
        per_rank = [
            (toy_loss(w, batches[r][step].labeled), toy_loss(w, batches[r][step].pseudo))
            for r in range(world)
        ]
        mean_h = sum(x[0].item() for x in per_rank) / world
        mean_p = sum(x[1].item() for x in per_rank) / world
        avg = (
            (mean_h, mean_p)
            if avg is None
            else tuple(momentum * a + (1 - momentum) * v for a, v in zip(avg, (mean_h, mean_p)))
        )
        ratio = avg[0] / avg[1]
        loss = sum((h + alpha * ratio * p) / (1 + alpha) for h, p in per_rank) / world
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= lr * grad
    return w.detach()


def toy_loss(w, batch):
    """ToyDetector's summed losses, written again."""
    out = torch.stack([d["x"] for d in batch]) @ w.t()
    return out.mean() + (out**2).mean()


def _step_worker(out_dir, alpha, momentum, lr, steps):
    from detectron2.utils import comm

    rank = comm.get_rank()
    model = DetpreTrainer.wrap_model(ToyDetector())
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    step = StudentStep(
        model, toy_batches(rank, steps), optimizer, LossNormalizer(alpha=alpha, momentum=momentum)
    )
    with EventStorage() as storage:
        step.storage = storage
        for i in range(steps):
            step.iter = storage.iter = i
            step.run_step()
        logged = {k: v[0] for k, v in storage.latest().items() if k.startswith("loss_")}
    weight = next(model.parameters()).detach().flatten().tolist()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"weight": weight, "state": step.normalizer.state_dict(), "logged": logged}, f)


def _reduce_worker(out_dir):
    from detectron2.utils import comm

    rank = comm.get_rank()
    norm = LossNormalizer(alpha=1.0, momentum=0.9)
    values = [norm(torch.tensor(h), torch.tensor(p)).item() for h, p in LOSSES[rank]]
    with open(os.path.join(out_dir, f"reduce{rank}.json"), "w") as f:
        json.dump(values, f)


def test_moving_averages_all_reduced_across_two_processes(tmp_path):
    launch(_reduce_worker, 2, dist_url="auto", args=(str(tmp_path),))
    mean = [((h0 + h1) / 2, (p0 + p1) / 2) for (h0, p0), (h1, p1) in zip(LOSSES[0], LOSSES[1])]
    ratios = [ratio for _, ratio in reference(mean, 1.0, 0.9)]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"reduce{rank}.json").read_text())
        # Each rank normalizes its own losses with the ratio of the all-reduced averages.
        expected = [(h + r * p) / 2 for (h, p), r in zip(LOSSES[rank], ratios)]
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_student_step_single_process_matches_one_backward():
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = StudentStep(model, toy_batches(0, 3), optimizer, LossNormalizer(alpha=0.5, momentum=0.5))
    with EventStorage() as storage:
        step.storage = storage
        for i in range(3):
            step.iter = storage.iter = i
            step.run_step()
        latest = storage.latest()
        # The weighted terms sum to total_loss; the raw losses and the ratio are logged too.
        terms = [v[0] for k, v in latest.items() if k.startswith(("human/", "pseudo/"))]
        assert len(terms) == 4
        assert sum(terms) == pytest.approx(latest["total_loss"][0], rel=1e-5)
        assert latest["loss_ratio"][0] == pytest.approx(step.normalizer.ratio)
    expected = expected_weights(1, alpha=0.5, momentum=0.5, lr=0.1, steps=3)
    torch.testing.assert_close(model.linear.weight.detach(), expected, rtol=1e-5, atol=1e-6)


def test_student_step_ddp_two_processes(tmp_path):
    """Two CPU processes, DDP (gloo): the human backward runs without sync, the pseudo one
    averages the summed gradients; both ranks end with the weights of the reference."""
    launch(_step_worker, 2, dist_url="auto", args=(str(tmp_path), 1.0, 0.9, 0.1, 3))
    expected = expected_weights(2, alpha=1.0, momentum=0.9, lr=0.1, steps=3).flatten()
    states = []
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        np.testing.assert_allclose(got["weight"], expected.tolist(), rtol=1e-5, atol=1e-6)
        states.append(got["state"])
    assert states[0] == states[1]  # the same moving averages on both ranks
    logged = json.loads((tmp_path / "rank0.json").read_text())["logged"]
    assert set(logged) >= {"loss_human", "loss_pseudo", "loss_ratio"}
