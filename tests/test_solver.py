import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from detpre.config import add_detpre_config
from detpre.solver import (
    LARS,
    build_pretrain_optimizer,
    maybe_add_full_model_gradient_clipping,
    split_decay_groups,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def _cfg(name, **solver):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.SOLVER.OPTIMIZER = name
    cfg.SOLVER.BASE_LR = 0.5
    cfg.SOLVER.WEIGHT_DECAY = 0.1
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_split_decay_groups_by_dimension():
    model = _model()
    model[2].weight.requires_grad_(False)
    decay, no_decay = split_decay_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert sorted(p.numel() for p in no_decay["params"]) == [2, 3, 3, 3]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert no_decay["lars_exclude"] and not decay["lars_exclude"]


def test_lars_two_steps_match_hand_computation():
    torch.manual_seed(1)
    w = torch.randn(5, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    grads = [(torch.randn(5, 3), torch.randn(5)) for _ in range(2)]
    opt = LARS(
        [{"params": [w]}, {"params": [b], "lars_exclude": True}],
        lr=0.3,
        momentum=0.9,
        weight_decay=0.01,
        eta=0.02,
    )
    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    mu_w, mu_b = torch.zeros_like(w_ref), torch.zeros_like(b_ref)
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        d = gw + 0.01 * w_ref
        d = d * (0.02 * w_ref.norm() / d.norm())
        mu_w = 0.9 * mu_w + d
        w_ref = w_ref - 0.3 * mu_w
        mu_b = 0.9 * mu_b + gb
        b_ref = b_ref - 0.3 * mu_b
    torch.testing.assert_close(w.detach(), w_ref)
    torch.testing.assert_close(b.detach(), b_ref)


def test_lars_zero_weight_uses_plain_update():
    w = torch.zeros(3, 2, requires_grad=True)
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.001)
    w.grad = torch.ones(3, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), -torch.ones(3, 2))


@pytest.mark.parametrize("name,cls", [("LARS", LARS), ("AdamW", torch.optim.AdamW)])
def test_build_pretrain_optimizer(name, cls):
    cfg = _cfg(name)
    cfg.SOLVER.ADAMW_BETAS = (0.8, 0.95)
    opt = build_pretrain_optimizer(cfg, _model())
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 0.5 for g in opt.param_groups)
    if name == "AdamW":
        assert opt.param_groups[0]["betas"] == (0.8, 0.95)


def test_build_pretrain_optimizer_sgd_and_clipping():
    cfg = _cfg("SGD")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    opt = build_pretrain_optimizer(cfg, _model())
    assert isinstance(opt, torch.optim.SGD)
    cfg.SOLVER.OPTIMIZER = "AdamW"
    model = _model()
    opt = build_pretrain_optimizer(cfg, model)
    model(torch.randn(4, 4)).sum().mul(1e4).backward()
    assert max(p.grad.norm() for p in model.parameters()) > 10
    opt.step()
    assert isinstance(opt, torch.optim.AdamW)
    # Detectron2's clipping rescaled each parameter's gradient in place before the step (per
    # parameter, as DINO clips).
    assert max(p.grad.norm() for p in model.parameters()) <= 1.0 + 1e-5


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="'Adam'"):
        build_pretrain_optimizer(_cfg("Adam"), _model())


@pytest.mark.parametrize("name", ["SGD", "AdamW", "LARS"])
def test_full_model_clipping_scales_all_gradients_by_one_factor(name):
    """CLIP_TYPE "full_model": the global 2-norm of all gradients is clipped to CLIP_VALUE, every
    gradient scaled by the same factor (the LOCA release's max_grad_norm), before the step."""
    cfg = _cfg(name)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = _model()
    opt = build_pretrain_optimizer(cfg, model)
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED  # the caller's config is left as it was
    assert isinstance(opt, {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "LARS": LARS}[name])
    model(torch.randn(4, 4)).sum().mul(100).backward()
    before = [p.grad.clone() for p in model.parameters()]
    total = torch.sqrt(sum(g.pow(2).sum() for g in before))
    assert total > 0.5 and max(g.norm() for g in before) / min(g.norm() for g in before) > 2
    opt.step()
    for g, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.grad, g * (0.5 / (total + 1e-6)), rtol=1e-5, atol=1e-7)
    assert torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())) == pytest.approx(
        0.5, rel=1e-5
    )


def test_full_model_clipping_off_leaves_the_optimizer_alone():
    cfg = _cfg("SGD")
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    assert type(maybe_add_full_model_gradient_clipping(opt, cfg.SOLVER.CLIP_GRADIENTS)) is (
        torch.optim.SGD
    )
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True  # Detectron2's per-parameter "value" type
    assert type(maybe_add_full_model_gradient_clipping(opt, cfg.SOLVER.CLIP_GRADIENTS)) is (
        torch.optim.SGD
    )
