"""Inference devices and dtypes: models built empty and loaded from safetensors, bf16 against fp32,
and clear errors for a device that is not there."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import vlgpt
from vlgpt.core.checkpoint import FILE_MODE, load_weights, read_config, save_model
from vlgpt.core.config import LanguageModelConfig, VLGPTConfig, from_dict
from vlgpt.core.devices import DeviceError, empty_parameters, resolve
from vlgpt.data import sequences as S
from vlgpt.inference.pipeline import Pipeline
from vlgpt.models.loading import find_vlgpt
from vlgpt.models.vlgpt import VLGPT
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render


@pytest.fixture(scope="module")
def image():
    return render(ShapesWorld("val", 32, 32).scene(0))  # a PIL image


def _states_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_empty_parameters_take_no_storage_and_loading_fills_them(serve_run):
    folder = find_vlgpt(serve_run)
    config = read_config(folder)
    cfg = VLGPTConfig(
        config["vocab_size"],
        config["num_image_tokens"],
        config["image_token_dim"],
        from_dict(LanguageModelConfig, config["lm"]),
    )
    with empty_parameters():
        empty = VLGPT(cfg)
    assert all(p.is_meta for p in empty.parameters())
    assert not any(b.is_meta for b in empty.buffers())  # RoPE tables are built, not loaded
    loaded = load_weights(folder, empty)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    eager = load_weights(folder, VLGPT(cfg))  # the old way: random weights first, then the file's
    _states_equal(loaded, eager)
    for (name, a), (_, b) in zip(loaded.named_buffers(), eager.named_buffers()):
        assert torch.equal(a, b), name


def test_meta_loading_gives_identical_outputs(serve_run, image):
    pipeline = vlgpt.load(serve_run)  # built empty, then the files' tensors
    assert all(not p.is_meta for p in pipeline.model.parameters())
    folder = find_vlgpt(serve_run)
    config = read_config(folder)
    cfg = VLGPTConfig(
        config["vocab_size"],
        config["num_image_tokens"],
        config["image_token_dim"],
        from_dict(LanguageModelConfig, config["lm"]),
    )
    eager = load_weights(folder, VLGPT(cfg)).eval()
    reference = Pipeline(eager, config, pipeline.codec, folder)
    assert pipeline.caption(image) == reference.caption(image)
    drawn = np.asarray(pipeline.imagine("a red circle"), dtype=np.int16)
    assert np.array_equal(drawn, np.asarray(reference.imagine("a red circle"), dtype=np.int16))


def test_tied_weights_stay_tied_after_an_empty_load(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, 4)
            self.head = nn.Linear(4, 11, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    save_model(tmp_path, model, {"kind": "test"})
    with empty_parameters():
        empty = Tied()
    loaded = load_weights(tmp_path, empty)
    assert loaded.head.weight is loaded.embed.weight
    assert torch.equal(loaded.embed.weight, model.embed.weight)


def test_bf16_inference_matches_fp32_closely(serve_run, image):
    fp32, bf16 = vlgpt.load(serve_run), vlgpt.load(serve_run, dtype="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.codec.dtype == torch.bfloat16
    z32, z16 = fp32.codec.encode([image]), bf16.codec.encode([image])  # noqa: N806
    assert z16.dtype == torch.bfloat16
    assert (z16.float() - z32).norm() / z32.norm() < 0.05
    segments = fp32.segments([{"role": "user", "content": [{"type": "image", "image": image}]}])
    batch = {k: v[None] for k, v in S.build(segments, fp32.tokenizer, fp32.codec.token_dim).items()}
    batch = {k: batch[k] for k in ("ids", "image_embeds", "is_image")}
    with torch.no_grad():
        h32 = fp32.model(batch)["hidden"]
        h16 = bf16.model(batch)["hidden"].float()
    assert (h16 - h32).norm() / h32.norm() < 0.05
    p32 = np.asarray(fp32.codec.decode(z32)[0], dtype=np.float32)
    p16 = np.asarray(bf16.codec.decode(z16)[0], dtype=np.float32)
    assert np.abs(p16 - p32).mean() < 4.0  # of 255
    assert isinstance(bf16.caption(image), str)


def test_int8_weights_match_fp32_closely(serve_run, image):
    pytest.importorskip("torchao", reason="the quant extra (torchao) is not installed; make test installs it")
    from vlgpt.inference.quantize import QuantizeError, quantizable

    fp32, int8 = vlgpt.load(serve_run), vlgpt.load(serve_run, quantize="int8")
    names = quantizable(fp32.model)
    assert names and not any(n.startswith(("image_in", "image_head")) for n in names)
    modules = dict(int8.model.named_modules())
    assert all(type(modules[n].weight).__name__ != "Parameter" for n in names)  # torchao's int8 tensor
    assert isinstance(int8.model.image_head, nn.Module)
    assert type(next(int8.model.image_head.parameters())).__name__ == "Parameter"  # kept in float
    segments = fp32.segments([{"role": "user", "content": [{"type": "image", "image": image}]}])
    batch = {k: v[None] for k, v in S.build(segments, fp32.tokenizer, fp32.codec.token_dim).items()}
    batch = {k: batch[k] for k in ("ids", "image_embeds", "is_image")}
    with torch.no_grad():
        h32, h8 = fp32.model(batch)["hidden"], int8.model(batch)["hidden"]
    assert 0 < (h8 - h32).norm() / h32.norm() < 0.05  # changed (quantized), but only a little
    assert isinstance(int8.caption(image), str)
    with pytest.raises(QuantizeError, match="choose one of int8"):
        vlgpt.load(serve_run, quantize="int4")


def test_int8_without_torchao_says_what_to_install(serve_run, monkeypatch):
    from vlgpt.inference.quantize import QuantizeError

    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(QuantizeError, match=r"pip install 'vlgpt\[quant\]'"):
        vlgpt.load(serve_run, quantize="int8")


def test_a_device_that_is_not_there_is_one_clear_error(serve_run):
    with pytest.raises(DeviceError, match="unknown device"):
        resolve("tpu")
    with pytest.raises(DeviceError, match="unknown dtype"):
        resolve("cpu", "int4")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path is for machines without it")
    with pytest.raises(DeviceError, match="use --device cpu"):
        vlgpt.load(serve_run, device="cuda")
    result = subprocess.run(
        [sys.executable, "-m", "vlgpt", "caption", "x.png", "--ckpt", str(serve_run), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr and "Traceback" not in result.stderr


def test_an_exported_folder_loads_and_captions_like_the_run(serve_run, image, tmp_path):
    from vlgpt.cli import main

    out = tmp_path / "shared" / "model"
    assert main(["export", str(serve_run), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: vlgpt\npipeline_tag:")
    size = vlgpt.load(serve_run).codec.image_size
    assert f" {size}x{size} images" in card and "?x?" not in card
    assert "| instruct |" in card and "## Measured" in card
    assert "| figure | value | 95% interval | n |" in card
    # Weights are readable as any other file the user writes (safetensors creates them 0600).
    assert {oct(f.stat().st_mode & 0o777) for f in out.rglob("*") if f.is_file()} == {oct(FILE_MODE)}
    assert (out / "chat_template.jinja").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("checkpoints"))  # models only
    run, shared = vlgpt.load(serve_run), vlgpt.load(out)
    assert shared.caption(image) == run.caption(image)
    assert shared.ask(image, "How many shapes are there?") == run.ask(image, "How many shapes are there?")
    a = np.asarray(shared.imagine("a red circle"), dtype=np.int16)
    assert np.array_equal(a, np.asarray(run.imagine("a red circle"), dtype=np.int16))


def test_export_refuses_an_existing_folder_and_a_run_without_a_model(serve_run, tmp_path, capsys):
    from vlgpt.cli import main

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(serve_run), str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine"  # untouched
    partial = tmp_path / "partial"
    (partial / "clip" / "model").mkdir(parents=True)
    assert main(["export", str(partial), str(tmp_path / "out")]) == 2
    assert "no finished clip stage" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    assert main(["export", str(serve_run), str(taken), "--overwrite"]) == 0
    assert (taken / "README.md").is_file() and not (taken / "notes.txt").exists()
