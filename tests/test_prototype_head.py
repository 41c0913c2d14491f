import torch
import torch.nn.functional as F

from detpre.modeling.loca.prototype_head import PrototypeHead


def test_cosine_scores_against_direct_computation():
    torch.manual_seed(0)
    head = PrototypeHead(12, hidden_dim=16, num_layers=2, bottleneck_dim=8, num_prototypes=10)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    x = torch.randn(3, 5, 12)
    out = head(x)
    assert out.shape == (3, 5, 10) and head.num_prototypes == 10
    z = head.mlp[4](F.gelu(head.mlp[2](F.gelu(head.mlp[0](x)))))
    z = z / z.norm(dim=-1, keepdim=True)
    w = head.prototypes.weight / head.prototypes.weight.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, z @ w.t())
    assert out.abs().max() <= 1 + 1e-6
    # Weight normalisation: rescaling a prototype changes nothing.
    with torch.no_grad():
        head.prototypes.weight[3] *= 7.0
    torch.testing.assert_close(head(x), out)


def test_gradients_reach_prototypes_and_mlp():
    head = PrototypeHead(6, hidden_dim=8, num_layers=1, bottleneck_dim=4, num_prototypes=5)
    head(torch.randn(4, 6)).logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
