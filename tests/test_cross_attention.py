import pytest
import torch
import torch.nn.functional as F

from detpre.modeling.loca.cross_attention import CrossAttentionBlock


def _direct(block, x, kv, heads):
    """Pre-norm cross-attention written out head by head."""
    dim = x.shape[-1]
    wq, wk, wv = block.attn.in_proj_weight.split(dim)
    bq, bk, bv = block.attn.in_proj_bias.split(dim)
    xn = F.layer_norm(x, (dim,), block.norm_q.weight, block.norm_q.bias, 1e-6)
    kvn = F.layer_norm(kv, (dim,), block.norm_kv.weight, block.norm_kv.bias, 1e-6)
    q, k, v = xn @ wq.t() + bq, kvn @ wk.t() + bk, kvn @ wv.t() + bv
    d = dim // heads
    outs = []
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        attn = torch.softmax(q[..., s] @ k[..., s].transpose(-1, -2) / d**0.5, dim=-1)
        outs.append(attn @ v[..., s])
    y = x + torch.cat(outs, dim=-1) @ block.attn.out_proj.weight.t() + block.attn.out_proj.bias
    m = F.layer_norm(y, (dim,), block.norm_mlp.weight, block.norm_mlp.bias, 1e-6)
    return y + block.mlp[2](F.gelu(block.mlp[0](m)))


def test_matches_direct_computation():
    torch.manual_seed(0)
    block = CrossAttentionBlock(12, num_heads=3, mlp_ratio=2.0)
    with torch.no_grad():  # non-trivial norms
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, kv = torch.randn(2, 5, 12), torch.randn(2, 7, 12)
    out = block(x, kv)
    assert out.shape == (2, 5, 12)
    torch.testing.assert_close(out, _direct(block, x, kv, 3), rtol=1e-4, atol=1e-5)
    # Queries attend to the key/value set only: permuting the keys changes nothing, permuting the
    # queries permutes the output.
    torch.testing.assert_close(block(x, kv[:, torch.randperm(7)]), out, rtol=1e-4, atol=1e-5)
    perm = torch.randperm(5)
    torch.testing.assert_close(block(x[:, perm], kv), out[:, perm], rtol=1e-4, atol=1e-5)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible by 3"):
        CrossAttentionBlock(10, num_heads=3)
