"""A local Hugging Face CLIP or SigLIP as the run's frozen CLIP (`vlgpt train clip --vision PATH`),
built tiny and random here, saved to a folder, and run through every later stage."""

import json
import subprocess

import pytest
import torch
import torch.nn.functional as F

from vlgpt.world.dataset import ShapesWorld

transformers = pytest.importorskip("transformers")


@pytest.fixture
def vlgpt(capsys):
    """The CLI in this process (each stage in a subprocess would pay torch's and transformers' start-up)."""
    from vlgpt.cli import main

    def call(*args, check=True):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        if check:
            assert code == 0, err[-2000:]
        return subprocess.CompletedProcess(args, code, out, err)

    return call


def save_tokenizer(folder, max_length: int):
    """A small BPE over Shapes captions as a PreTrainedTokenizerFast that ends every text in [EOS]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    world = ShapesWorld("train", 32, 32)
    texts = [world[i]["caption"] for i in range(300)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[EOS]"])
    )
    eos = tokenizer.token_to_id("[EOS]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", special_tokens=[("[EOS]", eos)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-vision")
    folders = {}
    for family in ("clip", "siglip"):
        folder = root / family
        tokenizer = save_tokenizer(folder, 16)
        vocab, eos, pad = len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id
        torch.manual_seed(0)
        tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        if family == "clip":
            config = transformers.CLIPConfig(
                text_config=dict(
                    vocab_size=vocab, max_position_embeddings=16, eos_token_id=eos, pad_token_id=pad, **tower
                ),
                vision_config=dict(image_size=32, patch_size=8, **tower),
                projection_dim=24,
            )
            model = transformers.CLIPModel(config)
            stats = {"image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]}
        else:
            config = transformers.SiglipConfig(
                text_config=dict(
                    vocab_size=vocab, max_position_embeddings=16, pad_token_id=pad, eos_token_id=eos, **tower
                ),
                vision_config=dict(image_size=32, patch_size=8, **tower),
            )
            model = transformers.SiglipModel(config)
            stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
        model.save_pretrained(folder, safe_serialization=True)
        (folder / "preprocessor_config.json").write_text(json.dumps({**stats, "size": 32}))
        folders[family] = folder
    return folders


def test_clip_interface_matches_the_checkpoint(checkpoints):
    from vlgpt.models.hf_clip import HFClip

    clip = HFClip(checkpoints["clip"], condition_grid=2)
    pixels = torch.rand(3, 3, 32, 32)
    features = clip.image_features(pixels)
    assert features.shape == (3, 1 + 16, 32)
    e_v = clip.image_embeddings(pixels, features)
    assert e_v.shape == (3, 1 + 4, 24) and clip.config.num_condition_tokens == 5
    assert torch.allclose(e_v.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4)  # unit RMS, as vlgpt's CLIP
    model = clip.model  # the checkpoint's own image embedding: projection of the post-norm CLS token
    normed = (pixels - clip.mean) / clip.std
    reference = F.normalize(
        model.visual_projection(model.vision_model(pixel_values=normed).pooler_output), dim=-1
    )
    assert torch.allclose(clip.encode_image(pixels), reference, atol=1e-5)
    e_t = clip.embed_captions(["a red circle.", "two blue squares and a green star."])
    assert e_t.shape == (2, 24) and torch.allclose(e_t.norm(dim=-1), torch.ones(2), atol=1e-5)

    siglip = HFClip(checkpoints["siglip"], condition_grid=2)
    assert siglip.image_features(pixels).shape == (3, 1 + 16, 32)  # pooled output first: no CLS token
    assert siglip.image_embeddings(pixels).shape == (3, 5, 32)
    assert siglip.embed_captions(["a red circle."]).shape == (1, 32)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_every_stage_runs_on_a_frozen_hf_vision_checkpoint(family, checkpoints, tmp_path, vlgpt):
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--out", run, "--save-every", "0", "--eval-size", "16"]
    result = vlgpt("train", "clip", "--vision", checkpoints[family], *common)
    assert "image_to_text_r1" in result.stdout
    config = json.loads((run / "clip" / "model" / "config.json").read_text())
    assert config["backbone"] == "hf" and config["family"] == family
    assert (run / "clip" / "model" / "hf" / "model.safetensors").is_file()
    for stage in ("tokenizer", "decoder"):
        vlgpt("train", stage, "--steps", "4", *common)
    image = tmp_path / "scene.png"
    world = ShapesWorld("val", 32, 32)
    world.image(world[0]).save(image)
    vlgpt("reconstruct", image, "--ckpt", run, "-o", tmp_path / "recon.png")
    if family == "clip":  # the transformer stages read the codec only; once is enough
        vlgpt("train", "pretrain", "--steps", "4", *common)
        vlgpt("train", "instruct", "--steps", "4", "--lora-rank", "4", *common)
        assert vlgpt("caption", image, "--ckpt", run, "--max-tokens", "4").returncode == 0
        assert vlgpt("imagine", "a red circle", "--ckpt", run, "-o", tmp_path / "drawn.png").returncode == 0


def test_remote_code_pickles_and_vision_only_folders_are_refused(checkpoints, tmp_path, vlgpt):
    import shutil

    cases = {}
    for name in ("remote", "pickle", "towerless"):
        cases[name] = tmp_path / name
        shutil.copytree(checkpoints["clip"], cases[name])
    config = json.loads((cases["remote"] / "config.json").read_text())
    (cases["remote"] / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Model"}}))
    for file in cases["pickle"].glob("*.safetensors"):
        file.rename(file.with_suffix(".bin"))
    (cases["towerless"] / "config.json").write_text(json.dumps({**config, "model_type": "clip_vision_model"}))
    for name, words in (
        ("remote", "remote code"),
        ("pickle", "safetensors only"),
        ("towerless", "text tower"),
    ):
        result = vlgpt(
            "train",
            "clip",
            "--vision",
            cases[name],
            "--preset",
            "tiny",
            "--out",
            tmp_path / f"r-{name}",
            check=False,
        )
        assert result.returncode == 2 and words in result.stderr, (name, result.stderr[-500:])
        assert "Traceback" not in result.stderr
    result = vlgpt(
        "train",
        "tokenizer",
        "--vision",
        checkpoints["clip"],
        "--preset",
        "tiny",
        "--out",
        tmp_path / "x",
        check=False,
    )
    assert result.returncode == 2 and "--vision belongs to the clip stage" in result.stderr
