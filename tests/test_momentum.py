import numpy as np
import pytest
import torch
from torch import nn

from detpre.modeling.ssl import MomentumCopy, build_momentum_copy, cosine_momentum, momentum_update


def _net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)
    )
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(seed + 3)
    return net


def _numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def test_copy_is_equal_independent_and_frozen():
    online = _net(0)
    target = build_momentum_copy(online)
    for (k, a), (k2, b) in zip(online.state_dict().items(), target.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b)
        assert a.data_ptr() != b.data_ptr()
    assert all(p.requires_grad for p in online.parameters())
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online[0].weight.add_(1.0)
    assert not torch.equal(online[0].weight, target[0].weight)


@pytest.mark.parametrize("m", [0.0, 0.5, 0.9, 0.999, 1.0])
def test_ema_update_matches_numpy(m):
    online, target = _net(1), _net(2)
    target.requires_grad_(False)
    before_online, before_target = _numpy_state(online), _numpy_state(target)
    momentum_update(online, target, m)
    after = _numpy_state(target)
    param_names = {k for k, _ in online.named_parameters()}
    for k in before_target:
        if k in param_names:
            expected = m * before_target[k].astype(np.float64) + (1 - m) * before_online[k]
            np.testing.assert_allclose(after[k], expected, rtol=1e-6, atol=1e-7)
        else:  # buffers are copied from the online network
            np.testing.assert_array_equal(after[k], before_online[k])
    # the online network is untouched
    for k, v in _numpy_state(online).items():
        np.testing.assert_array_equal(v, before_online[k])


def test_ema_update_can_keep_buffers():
    online, target = _net(1), _net(2)
    before = _numpy_state(target)
    momentum_update(online, target, 0.5, copy_buffers=False)
    np.testing.assert_array_equal(target[1].running_mean.numpy(), before["1.running_mean"])
    assert int(target[1].num_batches_tracked) == int(before["1.num_batches_tracked"])


def test_ema_update_rejects_mismatch_and_bad_momentum():
    with pytest.raises(ValueError, match="differ in parameters"):
        momentum_update(_net(0), nn.Linear(2, 2), 0.9)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(_net(0), _net(1), 1.5)


def test_cosine_schedule_matches_formula():
    m0, total = 0.99, 1000
    ts = np.arange(0, total + 1, 37)
    expected = 1 - (1 - m0) * (np.cos(np.pi * ts / total) + 1) / 2
    got = np.array([cosine_momentum(m0, int(t), total) for t in ts])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert cosine_momentum(m0, 0, total) == pytest.approx(m0)
    assert cosine_momentum(m0, total, total) == pytest.approx(1.0)
    assert cosine_momentum(m0, total // 2, total) == pytest.approx((1 + m0) / 2)
    assert np.all(np.diff(got) >= 0)
    # clamped outside [0, T]
    assert cosine_momentum(m0, total + 50, total) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cosine_momentum(m0, 0, 0)


def test_momentum_copy_names_update_and_reset():
    owner = nn.Module()
    owner.backbone = _net(0)
    owner.ssl_head = nn.Linear(2, 3)
    copy = MomentumCopy({"backbone": owner.backbone, "ssl_head": owner.ssl_head})
    owner.momentum = copy
    keys = set(owner.state_dict())
    online_keys = {k for k in keys if not k.startswith("momentum.")}
    assert {k for k in keys if k.startswith("momentum.")} == {"momentum." + k for k in online_keys}
    assert not any(p.requires_grad for p in copy.parameters())

    with torch.no_grad():
        owner.ssl_head.weight.add_(1.0)
        owner.backbone[1].running_mean.add_(2.0)
    before = copy.ssl_head.weight.clone()
    copy.update(owner, 0.9)
    expected = 0.9 * before + 0.1 * owner.ssl_head.weight
    assert torch.allclose(copy.ssl_head.weight, expected, atol=1e-7)
    assert torch.equal(copy.backbone[1].running_mean, owner.backbone[1].running_mean)

    copy.reset(owner)
    state = owner.state_dict()
    for k in online_keys:
        assert torch.equal(state["momentum." + k], state[k]), k
