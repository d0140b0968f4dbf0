"""The paper's decoder: a frozen diffusers pipeline as the run's pixel decoder (`--decoder PATH`).

A tiny random Stable Diffusion layout (UNet, VAE, CLIP text encoder and tokenizer, an IP-Adapter and
its image encoder) is built from configs by docs/custom-models.md's own recipe, then run through every
stage, drawn from, checked against transformers, refused when it should be, and exported."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from vlgpt.cli import main  # noqa: E402

DOC = Path(__file__).parents[1] / "docs" / "custom-models.md"


def documented_blocks() -> list[tuple[str, str]]:
    section = DOC.read_text().split("### Try it offline", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.DOTALL)


def run_cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """docs/custom-models.md "Try it offline": the Python block builds models/tiny-sd, every `vlgpt`
    line runs through the CLI as written (clip, decoder import, tokenizer, pretrain, instruct, imagine)."""
    root = tmp_path_factory.mktemp("diffusers")
    blocks = documented_blocks()
    assert [kind for kind, _ in blocks] == ["python", "bash"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the commands leave --threads at all cores; on 2 shared cores one is faster
        try:
            exec(compile(blocks[0][1], str(DOC), "exec"), {})
            for line in blocks[1][1].strip().splitlines():
                argv = line.split()
                assert argv[0] == "vlgpt", line
                run_cli(*[a.strip('"') for a in re.findall(r'"[^"]*"|\S+', line)][1:])
        finally:
            torch.set_num_threads(threads)
    return root


def test_every_stage_runs_and_imagine_draws_at_the_decoders_size(trained):
    from PIL import Image

    run = trained / "runs/sd"
    config = json.loads((run / "decoder/model/config.json").read_text())
    assert config["backbone"] == "diffusers" and config["adapter"] == "ip-adapter"
    assert (config["text_tokens"], config["text_dim"], config["image_tokens"]) == (16, 32, 1)
    assert (run / "decoder/model/diffusers/unet/diffusion_pytorch_model.safetensors").is_file()
    pair = json.loads((run / "tokenizer/model/config.json").read_text())["config"]
    assert (pair["text_tokens"], pair["text_dim"], pair["num_condition_tokens"]) == (16, 32, 1)
    drawn = Image.open(trained / "drawn.png")
    assert drawn.size == (config["image_size"], config["image_size"]) == (32, 32)
    assert np.asarray(drawn).std() > 0  # pixels, not a blank canvas


def test_tokenizer_targets_are_the_decoders_own_text_encoder_states(trained):
    """e_t is exactly what the UNet cross-attends to: the pipeline's CLIP text encoder over the caption
    padded to its tokenizer's length, computed here with transformers alone."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from vlgpt.core.presets import preset
    from vlgpt.train.stages import StageInputs, get_stage

    run = trained / "runs/sd"
    stage = get_stage("tokenizer").from_run(run, StageInputs(preset("tiny").model, eval_size=8), None)
    captions = ["A large red circle.", "Two small blue stars and a green square."]
    batch = stage.targets(torch.rand(2, 3, 32, 32), captions)
    folder = trained / "models/tiny-sd"
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    ids = tokenizer(captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = encoder(ids.input_ids).last_hidden_state
    torch.testing.assert_close(batch["e_t"], expected, rtol=0, atol=1e-6)
    assert batch["e_v"].shape == (2, 1, 32)  # the adapter's input: the image encoder's projected embedding


def test_one_seed_draws_one_picture_two_seeds_two(trained):
    import vlgpt

    model = vlgpt.load(trained / "runs/sd")
    draw = lambda seed: np.asarray(model.imagine("a red circle", steps=4, guidance=3.0, seed=seed))
    first, again, other = draw(1), draw(1), draw(2)
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1
    edited = model.edit(
        model.imagine("a red circle", steps=2), "Make the circle green.", refuse=False, steps=3, seed=0
    )
    assert edited.size == (32, 32)
    assert model.codec.stochastic and model.codec.output_size == 32


def test_an_exported_run_loads_and_draws_identically(trained, tmp_path):
    import vlgpt
    from vlgpt.export import export_run

    out = export_run(trained / "runs/sd", tmp_path / "export")
    assert (out / "decoder/model/diffusers/model_index.json").is_file()
    assert "drawn by a frozen StableDiffusionPipeline" in (out / "README.md").read_text()
    here = vlgpt.load(trained / "runs/sd").imagine("two blue stars", steps=3, seed=5)
    there = vlgpt.load(out).imagine("two blue stars", steps=3, seed=5)
    assert np.array_equal(np.asarray(here), np.asarray(there))


def broken(folder: Path, how: str) -> Path:
    """A copy of the tiny pipeline with one thing wrong; returns the file the refusal must name."""
    index = json.loads((folder / "model_index.json").read_text())
    if how == "remote part":
        index["unet"] = ["my_package", "MyUNet"]
        (folder / "model_index.json").write_text(json.dumps(index))
        return folder / "model_index.json"
    if how == "custom pipeline":
        index["_class_name"] = ["pipeline", "MyPipeline"]
        (folder / "model_index.json").write_text(json.dumps(index))
        return folder / "model_index.json"
    if how == "auto_map":
        config = json.loads((folder / "vae/config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling.MyVAE"}
        (folder / "vae/config.json").write_text(json.dumps(config))
        return folder / "vae/config.json"
    if how == "pickled only":
        weights = folder / "unet/diffusion_pytorch_model.safetensors"
        weights.rename(folder / "unet/diffusion_pytorch_model.bin")
        return folder / "unet/diffusion_pytorch_model.bin"
    if how == "missing part":
        shutil.rmtree(folder / "text_encoder")
        return folder / "text_encoder"
    if how == "adapter pickled":
        (folder / "ip_adapter/ip_adapter.safetensors").rename(folder / "ip_adapter/ip_adapter.bin")
        return folder / "ip_adapter/ip_adapter.bin"
    raise ValueError(how)


@pytest.mark.parametrize(
    "how", ["remote part", "custom pipeline", "auto_map", "pickled only", "missing part", "adapter pickled"]
)
def test_a_bad_folder_is_refused_naming_the_file_and_nothing_is_written(trained, tmp_path, how, capsys):
    folder = tmp_path / "bad-sd"
    shutil.copytree(trained / "models/tiny-sd", folder)
    named = broken(folder, how)
    run = tmp_path / "run"
    assert main(["train", "decoder", "--out", str(run), "--decoder", str(folder)]) == 2
    error = capsys.readouterr().err
    assert str(named) in error, error
    assert not (run / "decoder").exists()


def test_without_an_adapter_only_the_text_states_condition_the_drawing(trained, tmp_path):
    """No ip_adapter/: e_v is empty, the tokenizer regresses z_t alone and the pipeline still draws."""
    import vlgpt

    folder = tmp_path / "text-only-sd"
    shutil.copytree(trained / "models/tiny-sd", folder)
    shutil.rmtree(folder / "ip_adapter")
    run = tmp_path / "run"
    shutil.copytree(trained / "runs/sd/clip", run / "clip")
    run_cli("train", "decoder", "--out", run, "--decoder", folder)
    assert json.loads((run / "decoder/model/config.json").read_text())["image_tokens"] == 0
    run_cli("train", "tokenizer", "--out", run, "--preset", "tiny", "--steps", "3")
    shutil.copytree(trained / "runs/sd/pretrain", run / "pretrain")
    picture = vlgpt.load(run).imagine("a red circle", steps=3, seed=0)
    assert picture.size == (32, 32)


def test_a_tokenizer_and_decoder_that_do_not_match_are_refused(trained, serve_run, tmp_path, capsys):
    """A tokenizer trained against a diffusers pipeline's conditions cannot feed vlgpt's own decoder, and
    one trained against the CLIP cannot feed the pipeline: said with the command that mends it."""
    import vlgpt
    from vlgpt.core.checkpoint import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(trained / "runs/sd", run)
    shutil.rmtree(run / "decoder")
    assert main(["train", "decoder", "--out", str(run), "--preset", "tiny", "--steps", "2"]) == 2
    assert "regresses a diffusers decoder's conditions" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    shutil.copytree(serve_run, mixed)
    shutil.rmtree(mixed / "decoder")
    shutil.copytree(trained / "runs/sd/decoder", mixed / "decoder")
    with pytest.raises(CheckpointError, match="train it again"):
        vlgpt.load(mixed)


def test_steps_and_guidance_are_refused_for_a_deterministic_decoder(serve_run):
    import vlgpt
    from vlgpt.inference.generate import GenerationError

    model = vlgpt.load(serve_run)
    assert not model.codec.stochastic
    model.imagine("a red circle")  # defaults: fine
    with pytest.raises(GenerationError, match="deterministic"):
        model.imagine("a red circle", guidance=3.0)


def test_the_api_draws_n_different_pictures_and_takes_steps_and_guidance(trained, serve_run):
    """Through a real server and the openai client: image i of n from seed + i; `steps`, `guidance`,
    `seed` as extra fields; a run with a deterministic decoder refuses them with a 400."""
    import base64

    import openai

    import vlgpt
    from tests.serve_helpers import ServerThread

    with ServerThread(vlgpt.load(trained / "runs/sd")) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        result = client.images.generate(
            model="vlgpt", prompt="a red circle", n=2, extra_body={"steps": 3, "guidance": 2.0, "seed": 4}
        )
        pictures = [base64.b64decode(d.b64_json) for d in result.data]
        assert len(pictures) == 2 and pictures[0] != pictures[1]
        again = client.images.generate(
            model="vlgpt", prompt="a red circle", extra_body={"steps": 3, "guidance": 2.0, "seed": 5}
        )
        assert base64.b64decode(again.data[0].b64_json) == pictures[1]
    with ServerThread(vlgpt.load(serve_run)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="deterministic"):
            client.images.generate(model="vlgpt", prompt="a red circle", extra_body={"guidance": 2.0})
