"""Ship a trained world decoder: copy RUN/diffusion/model/ to OUT with its weights in fp16 (half the
bytes; it loads in fp32), and write OUT/README.md, the model card: the recipe, the data and seed, the
training minutes, the measured figures beside their floors, and every weight file's sha256.

    python benchmarks/world_decoder.py runs/world-decoder/diffusion/model --json /tmp/wd.json
    python benchmarks/ship_world_decoder.py runs/world-decoder pretrained/world-decoder --figures /tmp/wd.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from safetensors.torch import load_file, save_file


def minutes(stage_dir: Path) -> float:
    """Training minutes of a stage, from its log's throughput lines (evaluations not counted)."""
    batch, seconds, last = _batch(stage_dir), 0.0, 0
    for line in (stage_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "samples_per_s" in record:
            seconds += (record["step"] - last) * batch / max(record["samples_per_s"], 1e-9)
            last = record["step"]
    return seconds / 60


def _batch(stage_dir: Path) -> int:
    import yaml

    return int(yaml.safe_load((stage_dir / "config.yaml").read_text())["train"]["batch_size"])


def to_fp16(folder: Path) -> None:
    for file in folder.rglob("*.safetensors"):
        tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(file).items()}
        save_file(tensors, str(file), metadata={"format": "pt"})


def sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def card(run: Path, out: Path, figures: dict | None) -> str:
    import yaml

    vae_recipe = yaml.safe_load((run / "vae" / "config.yaml").read_text())
    recipe = yaml.safe_load((run / "diffusion" / "config.yaml").read_text())
    vae_minutes, diffusion_minutes = minutes(run / "vae"), minutes(run / "diffusion")
    train = recipe["train"]
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: diffusers",
        "pipeline_tag: text-to-image",
        "tags: [vlgpt, shapes-world, latent-diffusion, ip-adapter]",
        "---",
        "",
        "# The Shapes world's decoder",
        "",
        "A small latent diffusion model in Stable Diffusion's layout (AutoencoderKL, UNet2DConditionModel,",
        "a CLIP text encoder and tokenizer, a CLIP image encoder behind an IP-Adapter), trained once on",
        "the Shapes world by vlgpt's `vae` and `diffusion` stages and used frozen by `vlgpt demo",
        "--pretrained-decoder` (`vlgpt train decoder --decoder pretrained/world-decoder`), as VL-GPT uses",
        "Stable Diffusion.",
        "",
        "## Made by",
        "",
        "```",
        f"vlgpt train vae --out RUN --steps {vae_recipe['train']['steps']}",
        f"vlgpt train diffusion --out RUN --steps {train['steps']}",
        f"python benchmarks/ship_world_decoder.py RUN {out}",
        "```",
        "",
        f"Data: the Shapes world's train split generated on the fly (`--data world`), seed {train['seed']};",
        f"{vae_recipe['train']['steps']} autoencoder steps of {vae_recipe['train']['batch_size']} "
        f"({vae_minutes:.1f} min) and {train['steps']} diffusion steps of {train['batch_size']} "
        f"({diffusion_minutes:.1f} min), {vae_minutes + diffusion_minutes:.1f} minutes in all on "
        f"{'two CPU cores' if train.get('device', 'cpu') == 'cpu' else train['device']} "
        f"(precision {train.get('precision', 'auto')}). The full recipes are `vae.yaml` and "
        "`diffusion.yaml` beside this card. Weights are stored in fp16 and load in fp32.",
        "",
    ]
    if figures:
        from vlgpt.eval.decoder_eval import headline

        figs = headline(figures)
        lines += [
            "## Measured (the decoder alone; `python benchmarks/world_decoder.py pretrained/world-decoder`)",
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {v:.3f} |" for k, v in figs.items()],
            "",
            f"GenEval's prompts are drawn from their own text alone; the noise floor is what random pixels "
            f"score on them. Reconstruction redraws {figures.get('reconstruction', {}).get('n', '?')} "
            "validation scenes from their image embedding and caption. Steps and guidance: `vlgpt.json`.",
            "",
        ]
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{f.relative_to(out)}` | `{sha256(f)}` |" for f in sorted(out.rglob("*.safetensors"))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run folder with vae/ and diffusion/")
    parser.add_argument("out", help="where to write the shipped decoder (replaced)")
    parser.add_argument("--figures", help="JSON written by benchmarks/world_decoder.py --json")
    args = parser.parse_args()
    run, out = Path(args.run), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run / "diffusion" / "model", out, ignore=shutil.ignore_patterns("metrics.json"))
    to_fp16(out)
    shutil.copy(run / "vae" / "config.yaml", out / "vae.yaml")
    shutil.copy(run / "diffusion" / "config.yaml", out / "diffusion.yaml")
    figures = json.loads(Path(args.figures).read_text()) if args.figures else None
    (out / "README.md").write_text(card(run, out, figures))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
