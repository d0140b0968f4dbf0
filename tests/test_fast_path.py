"""The transformer's fast paths compute the same thing as the plain one, and the same as HF Llama.

Right-padded batches skip the padding in per-token layers; these tests pin that the real
positions' hidden states equal each sequence run alone, and that VL-GPT's loss equals the loss of
the same weights in `transformers`' Llama (the benchmarks' peer, benchmarks/hf_peer.py).
"""

import sys
from pathlib import Path

import pytest
import torch

from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
from vlgpt.models.transformer import KVCache, Transformer, TransformerConfig
from vlgpt.models.vlgpt import VLGPT

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from harness import synthetic_batch

CONFIG = TransformerConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64)


def test_right_padded_batch_equals_each_sequence_alone():
    torch.manual_seed(0)
    model = Transformer(CONFIG).eval()
    lengths = [12, 5, 9]
    x = torch.randn(3, 12, 32)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    batched = model(x, mask)
    for i, n in enumerate(lengths):
        alone = model(x[i : i + 1, :n])
        torch.testing.assert_close(batched[i, :n], alone[0], atol=1e-5, rtol=1e-5)
        assert (batched[i, n:] == 0).all()  # padding is not computed


def test_cached_chunks_equal_full_forward_under_every_mask_branch():
    torch.manual_seed(0)
    model = Transformer(CONFIG).eval()
    x = torch.randn(1, 10, 32)
    full = model(x)
    cache = KVCache(CONFIG, batch=1, max_len=64)
    pieces = [
        model(x[:, :4], cache=cache),
        model(x[:, 4:7], cache=cache),
        model(x[:, 7:8], cache=cache),
        model(x[:, 8:], cache=cache),
    ]  # prefill (causal flag), a chunk (explicit mask), single steps
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def tiny_vlgpt() -> VLGPT:
    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64)
    return VLGPT(VLGPTConfig(vocab_size=50, num_image_tokens=4, image_token_dim=8, lm=lm))


def padded_batch(model: VLGPT) -> dict:
    batch = synthetic_batch(model.config, batch_size=3, length=20, images=2, seed=1)
    for i, n in enumerate([20, 14, 9]):  # right padding, as `collate` lays it out
        batch["attention_mask"][i, n:] = 0
        batch["text_targets"][i, n - 1 :] = -100
        batch["image_target_mask"][i, n - 1 :] = False
    return batch


def test_loss_equals_hf_llama_with_the_same_weights():
    pytest.importorskip("transformers")
    from hf_peer import HFPeer, copy_weights

    model = tiny_vlgpt().eval()
    batch = padded_batch(model)
    peer = HFPeer(model).eval()
    copy_weights(model, peer)
    ours, theirs = model(batch), peer(batch)
    torch.testing.assert_close(ours["ce"], theirs["ce"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["mse"], theirs["mse"], atol=1e-5, rtol=1e-5)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours["hidden"][real], theirs["hidden"][real], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_bf16_autocast_loss_is_close_to_fp32():
    model = tiny_vlgpt().eval()
    batch = padded_batch(model)
    fp32 = model(batch)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(batch)["loss"]
    assert bf16.dtype == torch.float32
    assert abs(float(bf16) - float(fp32)) < 0.02 * float(fp32)


def test_text_batch_equals_one_by_one():
    """Left-padded batched decoding writes what `generate` writes for each prompt alone (greedy)."""
    from types import SimpleNamespace

    from vlgpt.core.text_tokenizer import TextTokenizer
    from vlgpt.data import sequences as S
    from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig

    tokenizer = TextTokenizer.train(["a red circle left of a blue square", "two green triangles"] * 20, 80)
    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64)
    model = VLGPT(VLGPTConfig(tokenizer.vocab_size, num_image_tokens=4, image_token_dim=8, lm=lm)).eval()
    with torch.no_grad():
        for special in (tokenizer.eos_id, tokenizer.img_id, tokenizer.pad_id, tokenizer.bos_id):
            model.transformer.lm_head.weight[special] = 0  # full-length answers: every position can disagree
    generator = InterleavedGenerator(model, tokenizer, SimpleNamespace(token_dim=8, num_tokens=4))
    prompts = [
        [S.image(torch.randn(4, 8)), S.text("a red circle")],
        [S.text("two")],
        [S.text("a blue square left of two green triangles")],
    ]
    config = SamplingConfig(max_new_tokens=12)
    batched = generator.text_batch(prompts, config)
    for prompt, answer in zip(prompts, batched):
        alone = generator.generate(prompt, config)
        assert answer.text == alone.text and answer.completion_tokens == alone.completion_tokens
    assert all(answer.completion_tokens == 12 for answer in batched)


def test_guided_drawing_steers_from_the_unconditional_context():
    """With guidance w, each drawn embedding is u + w (c - u): c from the prompt's context, u from a
    context of [BOS] [IMG] alone that is fed the same embeddings; w = 1 is the unguided drawing."""
    from types import SimpleNamespace

    from vlgpt.core.text_tokenizer import TextTokenizer
    from vlgpt.data import sequences as S
    from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig

    tokenizer = TextTokenizer.train(["a red circle left of a blue square", "two green triangles"] * 20, 80)
    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64)
    model = VLGPT(VLGPTConfig(tokenizer.vocab_size, num_image_tokens=4, image_token_dim=8, lm=lm)).eval()
    codec = SimpleNamespace(token_dim=8, num_tokens=4, decode=lambda embeddings, *drawing: embeddings)
    generator = InterleavedGenerator(model, tokenizer, codec)
    prompt = [S.text("a red circle")]

    def draw(guidance: float) -> torch.Tensor:
        config = SamplingConfig(head_guidance=guidance)
        return generator.generate(prompt, config, force_image=True, stop_after_image=True).images[0]

    plain, guided = draw(1.0), draw(3.0)
    torch.testing.assert_close(plain, generator.generate(prompt, force_image=True).images[0])
    with torch.no_grad():
        built = S.build(prompt, tokenizer, 8)
        ids = torch.cat([built["ids"], torch.tensor([tokenizer.img_id])])[None]
        batch = {"ids": ids, "image_embeds": torch.zeros(1, ids.shape[1], 8)}
        batch["is_image"] = torch.zeros(ids.shape, dtype=torch.bool)
        c = model.image_head(model(batch)["hidden"][0, -1])
        empty = torch.tensor([[tokenizer.bos_id, tokenizer.img_id]])
        batch = {
            "ids": empty,
            "image_embeds": torch.zeros(1, 2, 8),
            "is_image": torch.zeros(1, 2, dtype=torch.bool),
        }
        u = model.image_head(model(batch)["hidden"][0, -1])
    torch.testing.assert_close(guided[0], u + 3.0 * (c - u), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(guided, plain)


def test_standardised_image_inputs_fit_apply_everywhere_and_save(tmp_path):
    from safetensors.torch import save_file

    from vlgpt.core.checkpoint import load_weights

    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64, normalize_inputs=True)
    config = VLGPTConfig(vocab_size=50, num_image_tokens=4, image_token_dim=8, lm=lm)
    model = VLGPT(config).eval()
    z = torch.randn(256, 8) * torch.linspace(0.5, 4.0, 8) + torch.linspace(-3.0, 3.0, 8)
    model.fit_input_stats(z)
    standard = (z - model.image_mean) / model.image_std
    torch.testing.assert_close(standard.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(standard.std(0), torch.ones(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.project_image(z), model.image_in(standard))
    # the cached one-position path standardises exactly as the batched splice does
    ids = torch.tensor([[3, 0, 7]])
    embeds = torch.zeros(1, 3, 8)
    embeds[0, 1] = z[0]
    is_image = torch.tensor([[False, True, False]])
    full = model.transformer(model.embed(ids, embeds, is_image))[0]
    cache = model.new_cache(1, 8)
    steps = [model.step(cache, token=3), model.step(cache, embedding=z[0]), model.step(cache, token=7)]
    steps = torch.stack(steps)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    # the statistics are weights: saved with the model and loaded back
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    fresh = load_weights(tmp_path, VLGPT(config))
    torch.testing.assert_close(fresh.image_mean, model.image_mean)
    torch.testing.assert_close(fresh.image_std, model.image_std)
    # models without the option keep their old layout (and so their old checkpoints)
    assert "image_mean" not in tiny_vlgpt().state_dict()


def test_whitened_image_inputs_have_identity_covariance_and_save(tmp_path):
    """lm.whiten_inputs: image embeddings enter the projection with zero mean and identity covariance
    (ZCA), a quiet direction as loud as a loud one; the whitening is saved with the weights."""
    from safetensors.torch import save_file

    from vlgpt.core.checkpoint import load_weights

    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=1, heads=2, mlp_hidden=64, max_seq_len=64, whiten_inputs=True)
    config = VLGPTConfig(vocab_size=50, num_image_tokens=4, image_token_dim=8, lm=lm)
    model = VLGPT(config).eval()
    rotation = torch.linalg.qr(torch.randn(8, 8))[0]
    mixing = torch.diag(torch.linspace(0.1, 5.0, 8)) @ rotation  # correlated channels, very unequal sizes
    z = torch.randn(512, 8) @ mixing + 2.0
    model.fit_input_stats(z)
    white = (z - model.image_center) @ model.image_whiten
    torch.testing.assert_close(white.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(white.T), torch.eye(8), atol=1e-3, rtol=0)
    torch.testing.assert_close(model.project_image(z), model.image_in(white))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    fresh = load_weights(tmp_path, VLGPT(config))
    torch.testing.assert_close(fresh.image_whiten, model.image_whiten)
    assert "image_whiten" not in tiny_vlgpt().state_dict()


def test_image_place_embeddings_mark_each_embedding_of_a_span_in_training_and_decoding():
    """lm.image_positions: the k-th embedding of every image span gets place k, in a batch (the
    splice) exactly as one position at a time through the cache (drawing)."""
    from vlgpt.models.vlgpt import place_in_image

    mask = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 1, 0], [1, 1, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert place_in_image(mask).tolist() == [[0, 0, 1, 2, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 2, 3, 0, 0]]
    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64, image_positions=True)
    model = VLGPT(VLGPTConfig(vocab_size=50, num_image_tokens=3, image_token_dim=8, lm=lm)).eval()
    z = torch.randn(3, 8)
    ids = torch.tensor([[3, 4, 0, 0, 0, 5]])
    embeds = torch.zeros(1, 6, 8)
    embeds[0, 2:5] = z
    is_image = torch.tensor([[False, False, True, True, True, False]])
    full = model.transformer(model.embed(ids, embeds, is_image))[0]
    cache = model.new_cache(1, 8)
    steps = [model.step(cache, token=3), model.step(cache, token=4)]
    steps += [model.step(cache, embedding=z[k], place=k) for k in range(3)] + [model.step(cache, token=5)]
    torch.testing.assert_close(torch.stack(steps), full, atol=1e-5, rtol=1e-5)
    # the same embedding at another place enters differently: each place has its own vector
    assert not torch.allclose(
        model.project_image(z[:1], torch.tensor([0])), model.project_image(z[:1], torch.tensor([2]))
    )
    assert "image_pos" not in tiny_vlgpt().state_dict()  # off: the older layout, and its checkpoints
