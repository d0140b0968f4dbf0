"""A local Hugging Face causal LM as VL-GPT's transformer (docs/custom-models.md).

Tiny random Llama, Qwen2 and GPT-2 models and a BPE tokenizer trained on Shapes text are built here
and saved with save_pretrained; nothing is downloaded. The run's codec stages train for a few steps
through the CLI, then `pretrain --lm PATH`, `instruct`, `caption` and `imagine` run as documented.
"""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from vlgpt.cli import main
from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
from vlgpt.core.hf_lm import load_local_lm
from vlgpt.data import sequences as S
from vlgpt.models.hf_backbone import HFBackbone
from vlgpt.models.lora import add_lora, has_lora, merge_lora
from vlgpt.models.vlgpt import VLGPT

FAST = [
    "--preset",
    "tiny",
    "--steps",
    "3",
    "--save-every",
    "0",
    "--eval-size",
    "2",
    "--threads",
    "1",
    "--log-every",
    "1",
]


def shapes_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE over Shapes captions and questions, wrapped the way HF tokenizers are shipped."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from vlgpt.world.dataset import ShapesWorld

    world = ShapesWorld("train", 32, 32)
    texts = ["User: Assistant: Describe the image. Draw: An image of Layout:"]
    for i in range(150):
        row = world[i]
        texts += [row["caption"]] + [f"{q['question']} {q['answer']}" for q in row["questions"]]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_config(family: str, vocab: int):
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **ids,
        )
    if family == "qwen2":
        return Qwen2Config(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **ids,
        )
    if family == "mistral":  # a sliding window shorter than the sequences: the cache must honour it too
        return MistralConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            sliding_window=16,
            **ids,
        )
    return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=256, **ids)


@pytest.fixture(scope="module")
def lm_folders(tmp_path_factory) -> dict:
    """family -> a saved tiny random causal LM with the Shapes tokenizer (safetensors)."""
    root = tmp_path_factory.mktemp("hf-lms")
    tokenizer = shapes_tokenizer()
    folders = {}
    for family in ("llama", "qwen2", "mistral", "gpt2"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer)))
        folders[family] = root / family
        model.save_pretrained(folders[family])
        tokenizer.save_pretrained(folders[family])
    return folders


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory):
    """clip, tokenizer and decoder stages of a tiny run, trained for a few steps through the CLI."""
    run = tmp_path_factory.mktemp("codec-run")
    for stage in ("clip", "tokenizer", "decoder"):
        assert main(["train", stage, "--out", str(run), *FAST]) == 0
    return run


def new_run(codec_run, tmp_path):
    run = tmp_path / "run"
    for stage in ("clip", "tokenizer", "decoder"):
        shutil.copytree(codec_run / stage / "model", run / stage / "model")
    return run


def test_pretrain_instruct_caption_imagine_with_a_llama_backbone(lm_folders, codec_run, tmp_path, capsys):
    run = new_run(codec_run, tmp_path)
    lm = tmp_path / "my-llama"
    shutil.copytree(lm_folders["llama"], lm)
    assert main(["train", "pretrain", "--out", str(run), "--lm", str(lm), "--lora-rank", "4", *FAST]) == 0
    capsys.readouterr()
    assert (
        main(["train", "instruct", "--out", str(run), "--lm", str(lm), *FAST]) == 2
    )  # it continues from pretrain's
    assert "drop --lm" in capsys.readouterr().err
    assert main(["train", "instruct", "--out", str(run), "--lora-rank", "4", *FAST]) == 0
    shutil.rmtree(lm)  # the run keeps everything it needs: loading never goes back to --lm

    model_dir = run / "instruct" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["backbone"] == "hf" and config["stage"] == "instruct"
    assert json.loads((model_dir / "lm" / "config.json").read_text())["model_type"] == "llama"
    assert (model_dir / "lm" / "tokenizer.json").is_file()
    assert not [p for p in model_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]

    import vlgpt
    from vlgpt.models.loading import load_vlgpt
    from vlgpt.world.dataset import ShapesWorld

    pipe = vlgpt.load(run)
    assert isinstance(pipe.model.transformer, HFBackbone)
    assert pipe.tokenizer.decode(pipe.tokenizer.encode("a red circle")) == "a red circle"
    assert pipe.tokenizer.img_id == pipe.tokenizer.tokenizer.convert_tokens_to_ids("[IMG]")
    assert pipe.model.image_head.in_features == 48  # sized to the LM's hidden width
    # The instruct weights differ from pretrain's: the stage trained and saved its own.
    pretrained, _, _ = load_vlgpt(run / "pretrain" / "model")
    name = "image_head.weight"
    assert not torch.equal(pretrained.state_dict()[name], pipe.model.state_dict()[name])

    capsys.readouterr()
    image = tmp_path / "scene.png"
    world = ShapesWorld("val", 32, 32)
    world.image(world[0]).save(image)
    assert main(["caption", str(image), "--ckpt", str(run), "--max-tokens", "8"]) == 0
    caption = capsys.readouterr().out.strip()
    assert caption == pipe.caption(str(image), max_new_tokens=8)  # the CLI answers what the library answers
    out = tmp_path / "drawn.png"
    assert main(["imagine", "a red circle", "--ckpt", str(run), "-o", str(out), "--max-tokens", "4"]) == 0
    assert (
        main(["ask", str(image), "How many shapes are there?", "--ckpt", str(run), "--max-tokens", "4"]) == 0
    )
    assert (
        main(
            [
                "edit",
                str(image),
                "Make the circle green.",
                "--ckpt",
                str(run),
                "-o",
                str(out),
                "--draw-anyway",
            ]
        )
        == 0
    )
    from PIL import Image

    assert Image.open(out).size == (32, 32)

    lm_config = model_dir / "lm" / "config.json"  # a saved run is held to the same rule as --lm
    lm_config.write_text(
        json.dumps({**json.loads(lm_config.read_text()), "auto_map": {"AutoModel": "evil.Model"}})
    )
    capsys.readouterr()
    assert main(["caption", str(image), "--ckpt", str(run)]) == 2
    assert str(lm_config) in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_pretrain_then_load_with_other_families(family, lm_folders, codec_run, tmp_path):
    """Qwen2 and GPT-2 (tied LM heads; GPT-2 with Conv1D layers and learned positions), fully trained."""
    run = new_run(codec_run, tmp_path)
    assert main(["train", "pretrain", "--out", str(run), "--lm", str(lm_folders[family]), *FAST]) == 0
    import vlgpt

    pipe = vlgpt.load(run)
    assert pipe.model.transformer.model.config.model_type == family
    trained = pipe.model.transformer.model
    original = AutoModelForCausalLM.from_pretrained(lm_folders[family])
    # Full training moved the LM's own weights.
    name, weight = next(
        (n, p)
        for n, p in original.named_parameters()
        if p.ndim == 2 and "emb" not in n and "wte" not in n and "wpe" not in n
    )
    assert not torch.allclose(trained.get_parameter(name), weight)
    # A tied LM head is saved once and tied again on loading.
    assert trained.get_output_embeddings().weight is trained.get_input_embeddings().weight
    assert pipe.imagine("a blue star", max_new_tokens=2).size == (32, 32)
    # Instruction tuning continues on the same backbone, and the CLI generates from it.
    assert main(["train", "instruct", "--out", str(run), "--lora-rank", "4", *FAST]) == 0
    from vlgpt.world.dataset import ShapesWorld

    world = ShapesWorld("val", 32, 32)
    world.image(world[0]).save(tmp_path / "scene.png")
    assert main(["caption", str(tmp_path / "scene.png"), "--ckpt", str(run), "--max-tokens", "3"]) == 0


def test_remote_code_and_pickled_weights_are_refused(lm_folders, codec_run, tmp_path, capsys):
    run = new_run(codec_run, tmp_path)
    remote = tmp_path / "remote"
    shutil.copytree(lm_folders["qwen2"], remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (remote / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", "pretrain", "--out", str(run), "--lm", str(remote), *FAST]) == 2
    err = capsys.readouterr().err
    assert str(remote / "config.json") in err and "auto_map" in err

    pickled = tmp_path / "pickled"
    shutil.copytree(lm_folders["qwen2"], pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({}, pickled / "pytorch_model.bin")
    assert main(["train", "pretrain", "--out", str(run), "--lm", str(pickled), *FAST]) == 2
    err = capsys.readouterr().err
    assert str(pickled / "pytorch_model.bin") in err and "safetensors" in err
    assert not (run / "pretrain" / "model").exists()


def test_tokenizer_adapter_adds_image_tokens_and_falls_back_to_eos(lm_folders):
    from vlgpt.core.hf_lm import HFTextTokenizer

    tokenizer = HFTextTokenizer.load(lm_folders["qwen2"])
    assert tokenizer.tokenizer.convert_ids_to_tokens([tokenizer.img_id, tokenizer.img_end_id]) == [
        "[IMG]",
        "[/IMG]",
    ]
    assert tokenizer.vocab_size == 302 and tokenizer.bos_id == 1
    assert tokenizer.encode("a circle [IMG]")[-1] == tokenizer.img_id  # one special token, never split
    assert tokenizer.decode(tokenizer.encode("a circle [IMG] [/IMG]")) == "a circle"
    no_bos = PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer.backend_tokenizer, eos_token="</s>")
    adapted = HFTextTokenizer(no_bos)  # Qwen2-style: no BOS, no PAD
    assert adapted.bos_id == adapted.pad_id == adapted.eos_id == 2


def hf_vlgpt(folder, dim: int = 8, draw: str = "next") -> VLGPT:
    hf_model, tokenizer = load_local_lm(folder)
    torch.manual_seed(0)
    vocab = hf_model.get_input_embeddings().num_embeddings
    config = VLGPTConfig(vocab, 4, dim, LanguageModelConfig(draw=draw))
    return VLGPT(config, HFBackbone(hf_model)).eval(), tokenizer


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_drawing_queries_through_the_cache_equal_the_full_forward(family, lm_folders):
    """lm.draw=queries: the N queries fed in one pass after [IMG] through the KV cache (generation)
    have the hidden states the full forward gives them at a drawn image's places (training)."""
    model, tokenizer = hf_vlgpt(lm_folders[family], draw="queries")
    drawn = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    seq = S.build(
        [S.text("An image of a red circle."), S.image(drawn, train=True)], tokenizer, 8, draw_queries=True
    )
    assert seq["is_query"].sum() == 4
    batch = {k: seq[k][None] for k in ("ids", "image_embeds", "is_image", "is_query")}
    img = int((seq["ids"] == tokenizer.img_id).nonzero()[0])
    with torch.no_grad():
        full = model(batch)["hidden"][0, img + 1 : img + 5]
        cache = model.new_cache(1, model.max_seq_len)
        model({k: v[:, : img + 1] for k, v in batch.items()}, cache)  # the prompt and [IMG]
        cached = model.query_states(cache)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(cached[0], cached[1])  # each place its own query


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_kv_cached_greedy_decoding_equals_full_forward(family, lm_folders):
    model, tokenizer = hf_vlgpt(lm_folders[family])
    g = torch.Generator().manual_seed(0)
    prompt = S.build(
        [
            S.text("User:"),
            S.image(torch.randn(4, 8, generator=g)),
            S.text("Describe the image."),
            S.text("Assistant:"),
        ],
        tokenizer,
        8,
    )
    batch = {k: prompt[k][None] for k in ("ids", "image_embeds", "is_image")}
    cache = model.new_cache(1, model.max_seq_len)
    with torch.no_grad():
        hidden = model(batch, cache)["hidden"][0, -1]
        cached_logits, ids = [], prompt["ids"].tolist()
        for _ in range(6):  # greedy, one token at a time through the cache
            logits = model.next_token_logits(hidden)
            cached_logits.append(logits)
            ids.append(int(logits.argmax()))
            step = {
                "ids": torch.tensor([[ids[-1]]]),
                "image_embeds": torch.zeros(1, 1, 8),
                "is_image": torch.tensor([[False]]),
            }
            hidden = model(step, cache)["hidden"][0, -1]
        T = len(ids)
        full_batch = {
            "ids": torch.tensor([ids]),
            "is_image": torch.zeros(1, T, dtype=torch.bool),
            "image_embeds": torch.zeros(1, T, 8),
        }
        full_batch["is_image"][0, : len(prompt["ids"])] = prompt["is_image"]
        full_batch["image_embeds"][0, : len(prompt["ids"])] = prompt["image_embeds"]
        full = model.next_token_logits(model(full_batch)["hidden"][0])  # [T, V]
    assert cache.length == T
    start = len(prompt["ids"]) - 1
    torch.testing.assert_close(torch.stack(cached_logits), full[start : start + 6], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lora_on_an_hf_backbone_targets_its_decoder_and_merges(family, lm_folders):
    model, _ = hf_vlgpt(lm_folders[family])
    add_lora(model, rank=4, alpha=8)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    expected = (
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        if family == "llama"
        else {"c_attn", "c_proj", "c_fc"}
    )
    assert adapted == expected  # every linear layer of the decoder, never the LM head
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and "image_in.weight" in trainable
    assert "transformer.model.lm_head.weight" not in {n for n, _ in model.named_parameters() if "lora" in n}
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    g = torch.Generator().manual_seed(1)
    batch = {
        "ids": torch.randint(0, 300, (2, 10), generator=g),
        "image_embeds": torch.randn(2, 10, 8, generator=g),
        "is_image": torch.rand(2, 10, generator=g) < 0.3,
    }
    with torch.no_grad():
        before = model(batch)["hidden"]
        merge_lora(model)
        after = model(batch)["hidden"]
    assert not has_lora(model)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_the_documented_commands_work_as_written(tmp_path, monkeypatch):
    """docs/custom-models.md "Try it": its Python block runs as is, and every `vlgpt` line through the CLI."""
    doc = (Path(__file__).parents[1] / "docs" / "custom-models.md").read_text()
    blocks = re.findall(
        r"```(bash|python)\n(.*?)```", doc.split("### Try it", 1)[1].split("\n## ", 1)[0], flags=re.DOTALL
    )
    assert [kind for kind, _ in blocks] == ["bash", "python", "bash"]
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the commands leave --threads at all cores; on 2 shared cores one is faster
    try:
        run_documented(blocks)
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "runs/byo/instruct/model/config.json").read_text())["backbone"] == "hf"
    assert (tmp_path / "drawn.png").is_file()


def run_documented(blocks):
    for kind, code in blocks:
        if kind == "python":
            exec(compile(code, "docs/custom-models.md", "exec"), {})
            continue
        for line in code.splitlines():
            argv = shlex.split(line)
            assert argv[0] == "vlgpt", line
            assert main(argv[1:]) == 0, line


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_text_batch_runs_on_an_hf_backbone(family, lm_folders):
    """Batched decoding goes through the backbone interface (embed_text, transformer, heads) only, so an
    HF backbone decodes a batch as it decodes each prompt alone."""
    from types import SimpleNamespace

    from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig

    model, tokenizer = hf_vlgpt(lm_folders[family])
    g = torch.Generator().manual_seed(0)
    generator = InterleavedGenerator(model, tokenizer, SimpleNamespace(token_dim=8, num_tokens=4))
    prompts = [
        [S.text("User:"), S.image(torch.randn(4, 8, generator=g)), S.text("Describe the image. Assistant:")],
        [S.text("User: Describe the image. Assistant:")],
    ]
    config = SamplingConfig(max_new_tokens=6)
    batched = generator.text_batch(prompts, config)
    for prompt, answer in zip(prompts, batched):
        alone = generator.generate(prompt, config)
        assert answer.text == alone.text
