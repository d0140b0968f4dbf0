"""The language model's transformer: KV-cached decoding equals a full forward pass."""

import torch

from vlgpt.models import transformer
from vlgpt.models.transformer import KVCache, Transformer, TransformerConfig

CONFIG = TransformerConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64)


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    model = Transformer(CONFIG).eval()
    x = torch.randn(2, 12, 32)
    full = model(x)
    cache = KVCache(CONFIG, batch=2, max_len=64)
    pieces = [model(x[:, :5], cache=cache)]  # prefill
    for t in range(5, 12):  # then one token at a time
        pieces.append(model(x[:, t : t + 1], cache=cache))
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    assert cache.length == 12


def test_causal_and_padding_masks():
    torch.manual_seed(0)
    model = Transformer(CONFIG).eval()
    x = torch.randn(1, 8, 32)
    base = model(x)
    changed = x.clone()
    changed[:, 6:] += 1.0
    assert torch.allclose(model(changed)[:, :6], base[:, :6], atol=1e-6)  # the future never leaks back
    mask = torch.ones(1, 8)
    mask[:, 2] = 0  # a padding position is invisible to the others
    poked = x.clone()
    poked[:, 2] += 5.0
    assert torch.allclose(model(poked, mask)[:, 3:], model(x, mask)[:, 3:], atol=1e-5)
    assert torch.isfinite(model(x, torch.zeros(1, 8))).all()


def test_too_long_sequence_is_a_clear_error():
    model = Transformer(CONFIG)
    try:
        model(torch.randn(1, 65, 32))
    except ValueError as error:
        assert "exceeds max_seq_len 64" in str(error)
    else:
        raise AssertionError("no error for an over-long sequence")


def test_right_padded_batch_matches_each_row_alone(monkeypatch):
    """Training batches attend within length groups of rows: every row's outputs and gradients are
    those of the row run alone, with any number of groups, and padding comes back as zeros."""
    torch.manual_seed(0)
    model = Transformer(CONFIG)
    lengths = [12, 3, 9, 1, 12, 5, 0, 7]
    mask = (torch.arange(12)[None] < torch.tensor(lengths)[:, None]).long()
    x = torch.randn(len(lengths), 12, 32)
    alone = [model(x[i : i + 1, :n])[0] if n else torch.zeros(0, 32) for i, n in enumerate(lengths)]
    for groups in (1, 3, 8):
        monkeypatch.setattr(transformer, "ATTENTION_GROUPS", groups)
        inputs = x.clone().requires_grad_(True)
        y = model(inputs, mask)
        for i, n in enumerate(lengths):
            assert torch.allclose(y[i, :n], alone[i], atol=1e-5), (groups, i)
            assert not y[i, n:].any()
        y.pow(2).sum().backward()
        assert torch.isfinite(inputs.grad).all() and not (inputs.grad * (1 - mask[..., None])).any()
