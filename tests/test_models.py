"""Shapes of every component, and checkpoint folders that fail cleanly."""

import dataclasses
import json

import pytest
import torch

from vlgpt.core.checkpoint import CheckpointError, load_weights, read_config, save_model
from vlgpt.core.config import (
    ConfigError,
    ModelConfig,
    PixelDecoderModelConfig,
    TokenizerPairConfig,
    TrainConfig,
    from_dict,
)
from vlgpt.core.overrides import apply_overrides
from vlgpt.core.presets import preset
from vlgpt.models.clip import CLIP
from vlgpt.models.conv_encoder import build_vision
from vlgpt.models.pixel_decoder import build_pixel_decoder
from vlgpt.models.tokenizer_pair import TokenizerPair

TINY: ModelConfig = preset("tiny").model
SMALL: ModelConfig = preset("small").model


def test_component_output_shapes():
    clip = CLIP(TINY.clip)
    v, t = TINY.clip.vision, TINY.clip.text
    pixels = torch.rand(3, 3, v.image_size, v.image_size)
    ids, lengths = torch.randint(0, t.vocab_size, (3, 7)), torch.tensor([7, 3, 5])
    P, D = v.num_patches, TINY.clip.embed_dim
    assert clip.image_features(pixels).shape == (3, P + 1, v.width)
    C = TINY.clip.num_condition_tokens
    assert clip.image_embeddings(pixels).shape == (3, C, D)
    assert clip.encode_text(ids, lengths).shape == (3, D)
    loss, logits = clip(pixels, ids, lengths)
    assert logits.shape == (3, 3) and loss.ndim == 0
    pair = TokenizerPair(TokenizerPairConfig.for_clip(TINY.tokenizer, TINY.clip))
    embeddings = pair.tokenizer(clip.image_features(pixels))
    assert embeddings.shape == (3, TINY.tokenizer.num_tokens, TINY.tokenizer.token_dim)
    z_v, z_t = pair.detokenizer(embeddings)
    assert z_v.shape == (3, C, D) and z_t.shape == (3, D)
    decoder = build_pixel_decoder(PixelDecoderModelConfig.for_clip(TINY.decoder, TINY.clip))
    image = decoder.decode(z_v, z_t)
    assert image.shape == (3, 3, v.image_size, v.image_size)
    assert 0 <= image.min() and image.max() <= 1


def test_tokenizer_queries_are_causal():
    """Embedding i must not depend on queries after i (VL-GPT regresses them left to right)."""
    torch.manual_seed(0)
    pair = TokenizerPair(TokenizerPairConfig(TINY.tokenizer, 16, 5, 8))
    features = torch.randn(2, 5, 16)
    base = pair.tokenizer(features)
    with torch.no_grad():
        pair.tokenizer.transformer.queries[:, -1] += 1.0
    changed = pair.tokenizer(features)
    assert torch.allclose(base[:, :-1], changed[:, :-1], atol=1e-6)
    assert not torch.allclose(base[:, -1], changed[:, -1])


@pytest.mark.parametrize("seeded", [True, False])
def test_seeded_queries_give_a_patch_a_direct_path_to_its_token(seeded):
    """With seeded queries, changing one patch moves the token whose home it is more than any other
    token, before any training; without seeding, attention has yet to learn where to look."""
    torch.manual_seed(0)
    config = dataclasses.replace(SMALL.tokenizer, seeded_queries=seeded)
    pair = TokenizerPair(TokenizerPairConfig(config, 128, SMALL.clip.num_condition_tokens, 128, 64)).eval()
    features = torch.randn(1, 65, 128)
    base = pair.tokenizer(features)
    wins = 0
    for patch in range(0, 64, 9):  # patches on the diagonal of the 8 x 8 grid
        changed = features.clone()
        changed[0, 1 + patch] += 3.0 * torch.randn(128)
        moved = (pair.tokenizer(changed) - base).norm(dim=-1)[0]  # [N]
        row, col = divmod(patch, 8)
        home = (row // 2) * 8 + col  # 32 tokens tile the canvas as 4 rows x 8 columns
        wins += int(moved.argmax()) == home and moved[home] > 2 * moved.median()
    assert (wins == 8) if seeded else (wins < 8)


def test_contrastive_groups_treat_equivalent_captions_as_positives():
    clip = CLIP(TINY.clip)
    pixels = torch.rand(4, 3, 32, 32)
    ids, lengths = torch.randint(0, 100, (4, 5)), torch.full((4,), 5)
    separate, _ = clip(pixels, ids, lengths, torch.tensor([0, 1, 2, 3]))
    grouped, _ = clip(pixels, ids, lengths, torch.tensor([0, 0, 1, 1]))
    assert not torch.isclose(separate, grouped)


def test_overrides_are_typed_and_checked():
    cfg = apply_overrides(TINY, ["clip.vision.width=48", "tokenizer.num_tokens=6"])
    assert cfg.clip.vision.width == 48 and cfg.tokenizer.num_tokens == 6
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(TINY, ["clip.vision.wdth=48"])
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(TINY, ["clip.vision.width=wide"])
    # A fraction for a whole-number setting is refused, not truncated (depth 3.7 once became 3).
    with pytest.raises(ConfigError, match=r"lm\.depth: expected a whole number, got 3\.7"):
        apply_overrides(TINY, ["lm.depth=3.7"])
    assert apply_overrides(TINY, ["lm.depth=3.0"]).lm.depth == 3
    with pytest.raises(ConfigError, match="whole number"):
        from_dict(TrainConfig, {"steps": 12.9})


def test_checkpoint_folders_fail_cleanly(tmp_path):
    clip = CLIP(TINY.clip)
    save_model(tmp_path, clip, {"kind": "clip"})
    assert read_config(tmp_path, "clip")["kind"] == "clip"
    load_weights(tmp_path, CLIP(TINY.clip))
    with pytest.raises(CheckpointError, match="'clip' model, not 'decoder'"):
        read_config(tmp_path, "decoder")
    wider = apply_overrides(TINY, ["clip.vision.width=48"]).clip
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_weights(tmp_path, CLIP(wider))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged"):
        load_weights(tmp_path, clip)
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_weights(tmp_path, clip)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "clip", "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(CheckpointError, match="remote code"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(tmp_path)


def test_yaml_and_flags_override_the_preset(tmp_path):
    from vlgpt.train import resolve_configs

    path = tmp_path / "run.yaml"
    path.write_text("model:\n  clip:\n    embed_dim: 48\ntrain:\n  lr: 0.0005\n  steps: 7\n")
    model, train = resolve_configs("clip", "tiny", str(path), ("clip.vision.depth=2",), {"steps": 9})
    assert model.clip.embed_dim == 48 and model.clip.vision.depth == 2
    assert train.lr == 0.0005 and train.steps == 9  # the flag beats the file
    path.write_text("model:\n  clip:\n    embed_dimm: 48\n")
    with pytest.raises(ConfigError, match="unknown key.*embed_dimm"):
        resolve_configs("clip", "tiny", str(path))
    path.write_text("optimizer: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        resolve_configs("clip", "tiny", str(path))


def test_captioning_loss_reads_the_image_and_is_causal():
    """The caption decoder must learn words that only the image tells (a colour here), which
    InfoNCE alone need not keep; and a token's loss must not see that token."""
    torch.manual_seed(0)
    config = dataclasses.replace(TINY.clip, caption_weight=1.0)
    clip = CLIP(config)
    captioner = clip.captioner
    # Causal: changing the last caption token leaves the predictions for it unchanged.
    features = torch.randn(2, 1 + config.vision.num_patches, config.vision.width)
    ids, lengths = torch.randint(3, 50, (2, 6)), torch.tensor([6, 6])
    other = ids.clone()
    other[:, -1] = (other[:, -1] + 1) % 50
    first = captioner(features[:1], ids[:1, :5], lengths[:1] - 1)
    assert torch.isclose(first, captioner(features[:1], other[:1, :5], lengths[:1] - 1))
    # Learns an image-dependent word: red images are captioned 7, blue ones 9, after a shared word 5.
    size = config.vision.image_size
    pixels = torch.zeros(8, 3, size, size)
    pixels[:4, 0], pixels[4:, 2] = 1.0, 1.0
    ids = torch.tensor([[5, 7, 2]] * 4 + [[5, 9, 2]] * 4)
    lengths = torch.full((8,), 3)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=3e-3)
    for _ in range(120):
        parts = {}
        loss, _ = clip(pixels, ids, lengths, parts=parts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert parts["caption_ce"] < 0.1, parts  # chance for the colour word alone would be ln 2 / 3 = 0.23


def test_sigmoid_loss_is_siglips_pairwise_loss_and_learns_to_match():
    """clip.loss=sigmoid: -sum log sigmoid(+-(s x.y + b)) / B over all pairs; trained, each image's
    own caption scores above the others."""
    torch.manual_seed(0)
    clip = CLIP(dataclasses.replace(TINY.clip, loss="sigmoid", caption_weight=0.0))
    size = TINY.clip.vision.image_size
    pixels = torch.zeros(4, 3, size, size)
    for i, channels in enumerate(([0], [1], [2], [0, 1])):  # four colours
        pixels[i, channels] = 1.0
    ids = torch.tensor([[5, 7 + i, 2] for i in range(4)])
    lengths = torch.full((4,), 3)
    loss, logits = clip(pixels, ids, lengths)
    signs = 2 * torch.eye(4) - 1
    expected = -torch.nn.functional.logsigmoid(signs * (logits + clip.logit_bias)).sum() / 4
    torch.testing.assert_close(loss, expected)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=3e-3)
    for _ in range(150):
        loss, logits = clip(pixels, ids, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (logits.argmax(1) == torch.arange(4)).all(), logits
    with pytest.raises(ValueError, match="clip.loss"):
        CLIP(dataclasses.replace(TINY.clip, loss="hinge"))


def test_conv_tower_gives_a_pooled_token_then_its_grid():
    """vision.kind=conv: [B, 1 + P, width], the first row the mean of the cells (the ViT's form), and
    a cell sees its own part of the image more than a far one."""
    config = dataclasses.replace(SMALL.clip.vision, width=32)
    tower = build_vision(config)
    pixels = torch.rand(2, 3, config.image_size, config.image_size)
    out = tower(pixels)
    assert out.shape == (2, 1 + config.num_patches, 32)
    torch.testing.assert_close(out[:, 0], out[:, 1:].mean(1))
    changed = pixels.clone()
    changed[:, :, :8, :8] = 1 - changed[:, :, :8, :8]  # the top-left cell only
    delta = (tower(changed) - out)[0, 1:].norm(dim=-1)
    assert (
        delta[0] > 5 * delta[-1]
    )  # convolutions are local; only GroupNorm's statistics reach the far corner
    with pytest.raises(ValueError, match="mask_ratio"):
        build_vision(dataclasses.replace(config, mask_ratio=0.5))
    with pytest.raises(ValueError, match="vision.kind"):
        build_vision(dataclasses.replace(config, kind="mlp"))


def test_parallel_captions_see_no_words_and_greedy_captions_stop_at_eos():
    """clip.caption_parallel (CapPa): in training, a parallel row's predictions cannot depend on its
    words; the greedy decoder ends each caption at [EOS] and says what it was trained to say."""
    torch.manual_seed(0)
    config = dataclasses.replace(TINY.clip, caption_parallel=1.0)
    captioner = CLIP(config).captioner.train()
    features = torch.randn(1, 1 + config.vision.num_patches, config.vision.width)
    ids, other = torch.tensor([[5, 7, 8, 2]]), torch.tensor([[5, 9, 10, 2]])
    torch.testing.assert_close(captioner.logits(features, ids), captioner.logits(features, other))
    captioner.eval()  # generation (and evaluation) read the words
    assert not torch.allclose(captioner.logits(features, ids), captioner.logits(features, other))
    captioner = CLIP(dataclasses.replace(TINY.clip, caption_weight=1.0)).captioner
    optimizer = torch.optim.AdamW(captioner.parameters(), lr=3e-3)
    for _ in range(100):
        optimizer.zero_grad()
        captioner(features, ids, torch.tensor([4])).backward()
        optimizer.step()
    assert captioner.generate(features, eos_id=2) == [[5, 7, 8]]


def test_backward_captions_reverse_the_words_and_start_from_their_own_vector():
    """clip.caption_backward (VirTex's bicaptioning): a caption read right to left keeps its [EOS]
    last and its padding, and the decoder knows which way it reads."""
    from vlgpt.models.captioner import reversed_words

    ids = torch.tensor([[5, 6, 7, 2, 0], [8, 9, 2, 0, 0]])
    assert reversed_words(ids, torch.tensor([4, 3])).tolist() == [[7, 6, 5, 2, 0], [9, 8, 2, 0, 0]]
    torch.manual_seed(0)
    config = dataclasses.replace(TINY.clip, caption_backward=0.5)
    captioner = CLIP(config).captioner
    features = torch.randn(1, 1 + config.vision.num_patches, config.vision.width)
    forward = captioner.logits(features, ids[:1])
    backward = captioner.logits(features, ids[:1], reverse=torch.tensor([True]))
    assert not torch.allclose(forward[:, 0], backward[:, 0])  # a different start, a different first guess


def test_a_detached_contrastive_loss_leaves_the_tower_to_the_captions():
    """clip.contrastive_detach: InfoNCE's gradient trains the text tower and the image projection
    and stops at the image tower; the caption loss still reaches it."""
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, TINY.clip.vision.image_size, TINY.clip.vision.image_size)
    ids, lengths = torch.randint(3, 50, (2, 6)), torch.tensor([6, 6])
    for caption_weight, tower_learns in ((0.0, False), (1.0, True)):
        config = dataclasses.replace(TINY.clip, contrastive_detach=True, caption_weight=caption_weight)
        clip = CLIP(config)
        clip(pixels, ids, lengths)[0].backward()
        reached = sum(float(p.grad.abs().sum()) for p in clip.vision.parameters() if p.grad is not None)
        assert (reached > 0) == tower_learns
        assert clip.image_proj.weight.grad.abs().sum() > 0 and clip.text_proj.weight.grad.abs().sum() > 0


def test_masked_patches_drop_tokens_in_training_only():
    """clip.vision.mask_ratio (FLIP): training steps see a random share of the patches, while the
    features that later stages read keep every patch."""
    torch.manual_seed(0)
    vision = dataclasses.replace(TINY.clip.vision, kind="vit", mask_ratio=0.5)
    config = dataclasses.replace(TINY.clip, vision=vision)
    clip = CLIP(config)
    pixels = torch.rand(2, 3, config.vision.image_size, config.vision.image_size)
    patches = config.vision.num_patches
    assert clip.vision(pixels, 0.5).shape[1] == 1 + patches // 2
    assert clip.image_features(pixels).shape[1] == 1 + patches
    ids, lengths = torch.randint(3, 50, (2, 6)), torch.tensor([6, 6])
    clip.train()
    assert not torch.equal(
        clip(pixels, ids, lengths)[1], clip(pixels, ids, lengths)[1]
    )  # new masks each step
    clip.eval()
    torch.testing.assert_close(clip(pixels, ids, lengths)[1], clip(pixels, ids, lengths)[1])


def test_model_folders_of_the_older_layouts_still_load(tmp_path):
    """Folders written before config.json held the whole build config (tokenizer, decoder), and VL-GPT
    weights from before the backbone held the token embedding and LM head, load to the same models."""
    from safetensors.torch import save_file

    from vlgpt.core.config import VLGPTConfig, to_dict
    from vlgpt.core.text_tokenizer import TextTokenizer
    from vlgpt.models.loading import load_pixel_decoder, load_tokenizer_pair, load_vlgpt
    from vlgpt.models.vlgpt import VLGPT

    torch.manual_seed(0)
    clip = TINY.clip
    pair = TokenizerPair(TokenizerPairConfig.for_clip(TINY.tokenizer, clip))
    decoder = build_pixel_decoder(PixelDecoderModelConfig.for_clip(TINY.decoder, clip))
    old = {
        "tokenizer": (pair, {"config": to_dict(TINY.tokenizer), "feature_width": clip.vision.width,
                             "num_condition_tokens": clip.num_condition_tokens, "embed_dim": clip.embed_dim,
                             "num_patches": clip.vision.num_patches}),
        "decoder": (decoder, {"config": to_dict(TINY.decoder), "embed_dim": clip.embed_dim,
                              "image_size": clip.vision.image_size, "grid": clip.condition_grid}),
    }  # fmt: skip
    for kind, (model, config) in old.items():
        (tmp_path / kind).mkdir()
        save_model(tmp_path / kind, model, {"kind": kind, **config})
    assert load_tokenizer_pair(tmp_path / "tokenizer").config == pair.config
    assert load_pixel_decoder(tmp_path / "decoder").model_config == decoder.model_config
    features = torch.randn(2, 1 + clip.vision.num_patches, clip.vision.width)
    torch.testing.assert_close(
        load_tokenizer_pair(tmp_path / "tokenizer").tokenizer(features), pair.tokenizer(features)
    )

    model = VLGPT(VLGPTConfig(40, 4, 8, TINY.lm))
    state = {k.removeprefix("transformer.") if ".token_embed." in "." + k or ".lm_head." in "." + k else k: v
             for k, v in model.state_dict().items()}  # fmt: skip
    assert "token_embed.weight" in state and "lm_head.weight" in state
    folder = tmp_path / "vlgpt"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    meta = {
        "kind": "vlgpt",
        "vocab_size": 40,
        "num_image_tokens": 4,
        "image_token_dim": 8,
        "lm": to_dict(TINY.lm),
    }
    (folder / "config.json").write_text(json.dumps(meta))
    TextTokenizer.train(["a red circle", "a blue star"], 40).save(folder)
    loaded, _, _ = load_vlgpt(folder)
    torch.testing.assert_close(loaded.transformer.lm_head.weight, model.transformer.lm_head.weight)
