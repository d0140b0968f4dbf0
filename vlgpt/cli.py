"""The `vlgpt` command: a thin layer of typed functions over the library.

Each subcommand is one function; `main` turns known errors (bad input, unreadable files) into a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from .core.checkpoint import CheckpointError
from .core.config import ConfigError
from .core.devices import DTYPES, DeviceError
from .data.formats import FORMATS, DatasetError
from .data.images import ImageError
from .data.world_files import SHARD_SIZE
from .export import ExportError
from .inference.generate import DECODINGS, GenerationError
from .inference.quantize import QUANTIZE, QuantizeError
from .train.engine import TrainingError
from .world.judge import JudgeError
from .world.scene import MAX_CANVAS, MIN_CANVAS, SceneError
from .world.splits import SPLITS

USER_ERRORS: tuple[type[Exception], ...] = (
    SceneError,
    DatasetError,
    ImageError,
    JudgeError,
    FileNotFoundError,
    CheckpointError,
    ConfigError,
    GenerationError,
    TrainingError,
    DeviceError,
    ExportError,
    QuantizeError,
)


def cmd_world(args: argparse.Namespace) -> int:
    """Write Shapes-world rows as an imagefolder, LLaVA JSON or WebDataset dataset."""
    from .data.world_files import write_world

    out = write_world(
        args.out,
        args.n,
        split=args.split,
        fmt=args.format,
        seed=args.seed,
        size=args.size,
        overwrite=args.overwrite,
        shard_size=args.shard_size,
    )
    print(f"wrote {args.n} {args.split} rows ({args.format}) to {out}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Read an image back into a Shapes-world scene (JSON) with the classical judge."""
    from .data.images import load_image
    from .world.judge import judge

    scene = judge(load_image(args.image, max_pixels=args.max_pixels))
    print(scene.to_json())
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Check a dataset (imagefolder, LLaVA JSON or WebDataset shards); report every problem and its place."""
    import json

    from .data.check import check_dataset

    report = check_dataset(args.path, max_pixels=args.max_pixels)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(problem)
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        print(
            f"{report.path} ({report.format}): {report.examples} examples, {report.images} images: {verdict}"
        )
    return 0 if report.ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    """Train one stage into RUN/<stage>/; under torchrun, one data-parallel job (docs/distributed.md)."""
    from .eval.formatting import table
    from .train import train_stage
    from .train.distributed import is_main_process

    overrides = {name: getattr(args, name) for name in _train_fields() if getattr(args, name) is not None}
    if args.dry_run:
        from .core.overrides import resolved_yaml
        from .train import resolve_configs, resolve_data

        model, train = resolve_configs(args.stage, args.preset, args.config, tuple(args.set or ()), overrides)
        print(resolved_yaml(model, train, resolve_data(args.config, args.data, args.val_data)), end="")
        return 0
    metrics = train_stage(
        args.stage,
        args.out,
        preset_name=args.preset,
        data=args.data,
        val_data=args.val_data,
        yaml_file=args.config,
        model_overrides=tuple(args.set or ()),
        train_overrides=overrides,
        resume=args.resume,
        clip=args.clip,
        vision=args.vision,
        decoder=args.decoder,
    )
    if is_main_process():
        print(table(f"{args.stage}: final evaluation", metrics))
        print(f"model: {Path(args.out) / args.stage / 'model'}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Image -> N embeddings -> image, through a trained run's tokenizer, detokenizer and decoder."""
    from .inference.image_codec import ImageCodec

    codec = ImageCodec.load(args.ckpt, args.device, args.dtype)
    image = codec.reconstruct([args.image])[0]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.output)
    print(f"wrote {args.output} ({codec.num_tokens} embeddings of width {codec.token_dim} per image)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run: `reconstruction` (judge agreement and retrieval), `all` (everything VL-GPT does on
    Shapes) or `data DIR` (captions and answers on your own held-out data)."""
    from .eval.formatting import table, write_json

    if args.what != "all" and args.decoding != "standard":
        raise SystemExit(
            f"--decoding {args.decoding} is measured by `vlgpt eval all` only, not by `eval {args.what}`"
        )
    if args.what == "data":
        from .eval.data_eval import evaluate_data, headline

        if not args.path:
            raise SystemExit("vlgpt eval data needs the dataset: `vlgpt eval data DIR --ckpt RUN`")
        out = Path(args.output or Path(args.ckpt) / "eval_data.json")
        metrics = evaluate_data(_pipeline(args), args.path, limit=args.limit)
        metrics = {"headline": headline(metrics), **metrics}
    elif args.what == "all":
        from .eval.full import evaluate_all, headline, headline_figures

        out = Path(args.output or Path(args.ckpt) / "eval_all.json")
        metrics = evaluate_all(
            _pipeline(args),
            n=args.n,
            steps=args.steps,
            guidance=args.guidance,
            head_guidance=args.head_guidance,
            text=_decoding(args),
        )
        shown = headline_figures(metrics)  # with intervals; the file's headline keeps the values
        metrics = {"headline": headline(metrics), **metrics}
    elif args.what == "reconstruction":
        from .eval.reconstruction import evaluate_reconstruction

        out = Path(args.output or Path(args.ckpt) / "eval_reconstruction.json")
        metrics = evaluate_reconstruction(
            args.ckpt,
            n=args.n,
            split=args.split,
            grid_path=out.with_suffix(".png"),
            device=args.device,
            dtype=args.dtype,
        )
    write_json(out, metrics)
    title = f"eval data {args.path}" if args.what == "data" else f"eval {args.what} (n={args.n})"
    print(table(title, shown if args.what == "all" else metrics.get("headline", metrics)))
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write one folder to share: the image side's and the VL-GPT's weights and configs, the tokenizer,
    a chat template and a model card (README.md); `vlgpt.load(OUT)` and every verb read it."""
    from .export import export_run

    out = export_run(args.run, args.out, overwrite=args.overwrite)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MB; model card {out / 'README.md'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write an HTML report for any run: examples, every stage's curves and metrics, its evaluations
    (RUN/report.html, or RUN/run_report.html beside a demo's own report, which it never replaces)."""
    from .eval.report import write_run_report

    out = write_run_report(args.run, data=args.data, n=args.n, out=args.out)
    kept = "" if out.name != "run_report.html" else f" ({Path(args.run) / 'report.html'} is the demo's: kept)"
    print(f"wrote {out}{kept} (open it in a browser)")
    return 0


def _train_fields() -> dict:
    import dataclasses

    from .core.config import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One typed flag per TrainConfig field, with the field's help text; unset flags keep the preset."""
    from .core.config import TrainConfig
    from .core.overrides import add_config_arguments

    group = parser.add_argument_group("training overrides (default: the preset's recipe)")
    add_config_arguments(group, TrainConfig, defaults=False)


def _sampling(args: argparse.Namespace) -> dict:
    return {
        "max_new_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        **_decoding(args),
        **{k: getattr(args, k) for k in ("steps", "guidance") if getattr(args, k) is not None},
    }


def _decoding(args: argparse.Namespace) -> dict:
    if args.decoding == "standard":
        return {}
    return {"decoding": args.decoding, "vcd_alpha": args.vcd_alpha, "vcd_beta": args.vcd_beta}


def cmd_caption(args: argparse.Namespace) -> int:
    """Describe an image."""
    print(_pipeline(args).caption(args.image, **_sampling(args)))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer a question about an image."""
    print(_pipeline(args).ask(args.image, args.question, **_sampling(args)))
    return 0


def cmd_imagine(args: argparse.Namespace) -> int:
    """Draw an image from a prompt."""
    sampling = _sampling(args) | ({} if args.head_guidance is None else {"head_guidance": args.head_guidance})
    image = _pipeline(args).imagine(args.prompt, **sampling)
    image.save(args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    """Edit an image by an instruction."""
    result = _pipeline(args).edit(
        args.image, args.instruction, refuse=not args.draw_anyway, **_sampling(args)
    )
    if isinstance(result, str):  # the model says why the edit cannot be made; nothing is written
        print(f"not edited: {result}")
        return 0
    result.save(args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Chat in the terminal. Attach an image with `/image PATH`; `/reset` clears, `/quit` leaves.
    Images the model draws are saved into --save-dir and their paths printed."""
    from .data.images import load_image

    model = _pipeline(args)
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    messages: list[dict] = []
    pending: list[dict] = []
    drawn = 0
    print("vlgpt chat: /image PATH attaches an image, /reset clears, /quit leaves.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            messages, pending = [], []
            print("(conversation cleared)")
            continue
        if line.startswith("/image"):
            path = line[len("/image") :].strip()
            try:
                pending.append({"type": "image", "image": load_image(path)})
                print(f"(attached {path})")
            except USER_ERRORS as error:
                print(f"error: {error}")
            continue
        messages.append({"role": "user", "content": pending + [{"type": "text", "text": line}]})
        pending = []
        try:
            out = model.chat(messages, **_sampling(args))
        except USER_ERRORS as error:
            print(f"error: {error}")
            messages.pop()
            continue
        content = []
        for kind, value in out.parts:
            if kind == "text":
                print(f"vlgpt> {value}")
                content.append({"type": "text", "text": value})
            else:
                drawn += 1
                path = save_dir / f"image-{drawn:03d}.png"
                value.save(path)
                print(f"vlgpt> [image saved to {path}]")
                content.append({"type": "image", "image": value})
        messages.append({"role": "assistant", "content": content or ""})
    return 0


def _pipeline(args: argparse.Namespace):
    """The run named by --ckpt, on --device in --dtype, --quantize'd."""
    from .inference.pipeline import load

    return load(args.ckpt, args.device, args.dtype, args.quantize)


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu | cuda | cuda:N | mps")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="fp32", help="weights and activations (bf16/fp16: GPUs)"
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default=None,
        help="int8: the transformer's linear weights in int8, weight-only (needs torchao: vlgpt[quant])",
    )


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    _add_device(parser)
    parser.add_argument("--ckpt", required=True, help="run folder (or its instruct/pretrain model folder)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most new text tokens")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and a diffusion decoder's noise)")
    _add_decoding(parser)
    _add_drawing(parser)


def _add_decoding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default="standard",
        help="vcd: visual contrastive decoding, each token's logits contrasted with those given the "
        "image under diffusion noise, against objects the image does not hold (docs/serving.md)",
    )
    parser.add_argument("--vcd-alpha", type=float, default=1.0, help="with vcd: contrast strength (0: none)")
    parser.add_argument(
        "--vcd-beta",
        type=float,
        default=0.1,
        help="with vcd: keep tokens at least beta times as likely as the top one",
    )


def _add_drawing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="a diffusion decoder's (--decoder) denoising steps (default: the decoder's)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="a diffusion decoder's classifier-free guidance scale, >1 on (default: the decoder's)",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything end to end on the demo preset; reruns reuse finished stages."""
    from .demo import PRETRAINED_DECODER, run_demo

    decoder = args.pretrained_decoder
    if decoder is not None:
        decoder = Path(decoder) if decoder else PRETRAINED_DECODER
    run_demo(Path(args.out), quick=args.quick, decoder=decoder)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a run over an OpenAI-compatible HTTP API, with a browser UI at / (docs/serving.md)."""
    from .serve.server import serve
    from .serve.settings import settings_from_args

    return serve(args.ckpt, settings_from_args(args), args.device, args.dtype, args.quantize)


def _args_world(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--n", type=int, default=1000, help="number of rows (scenes)")
    parser.add_argument(
        "--split", choices=SPLITS, default="train", help="seed range; comp-test holds the held-out pairs"
    )
    parser.add_argument("--format", choices=FORMATS, default="imagefolder", help="dataset format")
    parser.add_argument("--seed", type=int, default=0, help="first row's offset in the split's seed range")
    parser.add_argument(
        "--size", type=int, default=64, help=f"canvas side in pixels ({MIN_CANVAS}..{MAX_CANVAS})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--shard-size", type=int, default=SHARD_SIZE, help="rows per WebDataset shard (--format wds)"
    )


def _args_judge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    parser.add_argument(
        "--max-pixels", type=int, default=16_000_000, help="refuse larger images before decoding"
    )


def _args_train(parser: argparse.ArgumentParser) -> None:
    from .core.presets import PRESETS, STAGES

    parser.add_argument("stage", choices=STAGES, help="which stage to train")
    parser.add_argument("--out", required=True, help="run folder; the stage writes RUN/<stage>/")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model size and recipe")
    parser.add_argument(
        "--data",
        help="'world' (Shapes, generated on the fly; the default), a dataset folder, or "
        "WebDataset shards, streamed ('data/train-{000000..000009}.tar', a glob or their folder); "
        "with --config, the recipe's data: section when not given",
    )
    parser.add_argument(
        "--val-data", help="validation dataset (default: Shapes val, or a held-out part of --data)"
    )
    parser.add_argument("--config", help="YAML file with model: and train: sections")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="model config override, e.g. --set clip.vision.width=256 (repeatable)",
    )
    parser.add_argument("--clip", help="CLIP model folder for tokenizer/decoder (default: RUN/clip)")
    parser.add_argument("--resume", action="store_true", help="continue from the last finished checkpoint")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved model and train config as YAML (what --config reads) and exit",
    )
    parser.add_argument(
        "--vision",
        metavar="PATH",
        help="clip stage: a local Hugging Face CLIP or SigLIP folder, "
        "frozen, becomes the run's CLIP instead of training one (docs/custom-models.md)",
    )
    parser.add_argument(
        "--decoder",
        metavar="PATH",
        help="decoder stage: a local diffusers text-to-image folder (Stable Diffusion layout), frozen, "
        "becomes the run's pixel decoder instead of training one; run it before `tokenizer`, which "
        "then regresses its conditions (docs/custom-models.md)",
    )
    _add_train_flags(parser)


def _args_reconstruct(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="input image file")
    parser.add_argument("--ckpt", required=True, help="run folder with clip, tokenizer and decoder stages")
    _add_device(parser)
    parser.add_argument("-o", "--output", required=True, help="output PNG")


def _args_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what", choices=["reconstruction", "all", "data"], help="what to evaluate (data: your own set)"
    )
    parser.add_argument("path", nargs="?", help="with `data`: a dataset folder, LLaVA JSON or shards")
    parser.add_argument("--limit", type=int, help="with `data`: evaluate the first N examples only")
    parser.add_argument("--ckpt", required=True, help="run folder")
    _add_device(parser)
    parser.add_argument("--n", type=int, default=500, help="scenes to evaluate")
    parser.add_argument("--split", choices=SPLITS, default="val", help="Shapes split")
    _add_decoding(parser)
    _add_drawing(parser)
    parser.add_argument(
        "--head-guidance",
        type=float,
        default=None,
        help="with `all`: the image head's classifier-free guidance on drawings (1: none)",
    )
    parser.add_argument("--output", help="JSON file (default: RUN/eval_<what>.json; a PNG grid beside it)")


def _args_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder")
    parser.add_argument("--data", help="show the first examples of this dataset (default: Shapes val scenes)")
    parser.add_argument("--n", type=int, default=8, help="examples to show")
    parser.add_argument(
        "--out",
        help="where to write the page (default: RUN/report.html, or RUN/run_report.html beside a demo's)",
    )


def _args_serve(parser: argparse.ArgumentParser) -> None:
    from .serve.settings import add_serve_arguments

    parser.add_argument("--ckpt", required=True, help="run folder (or its instruct/pretrain model folder)")
    _add_device(parser)
    add_serve_arguments(parser)


def _args_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder with clip, tokenizer, decoder and pretrain/instruct stages")
    parser.add_argument("out", help="the folder to write (must not exist or be empty)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty OUT once the new one is written"
    )


def _args_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument(
        "--pretrained-decoder",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="draw through a pretrained diffusers decoder imported frozen (`train decoder --decoder`), "
        "as VL-GPT draws through Stable Diffusion; without PATH the world decoder shipped in "
        "pretrained/world-decoder/. Default: train vlgpt's own pixel decoder in the run",
    )


def _args_data(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help=cmd_data_check.__doc__, description=cmd_data_check.__doc__)
    check.add_argument(
        "path", help="dataset folder, llava.json, or WebDataset shards (folder, glob, {a..b} pattern)"
    )
    check.add_argument("--max-pixels", type=int, default=16_000_000, help="report images larger than this")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=cmd_data_check)


def _args_verb(positionals: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    """caption, ask, edit: a run, the positionals, device and sampling flags."""
    for positional in positionals:
        parser.add_argument(positional)
    _add_sampling(parser)


def _args_edit(parser: argparse.ArgumentParser) -> None:
    _args_verb(("image", "instruction"), parser)
    parser.add_argument("-o", "--output", required=True, help="output PNG")
    parser.add_argument(
        "--draw-anyway",
        action="store_true",
        help="start the answer with the image, so the model cannot decline (by default an edit that "
        "cannot be made, e.g. of an object that is not there, prints the model's reason and writes "
        "nothing)",
    )


def _args_imagine(parser: argparse.ArgumentParser) -> None:
    _args_verb(("prompt",), parser)
    parser.add_argument("-o", "--output", required=True, help="output PNG")
    parser.add_argument(
        "--head-guidance",
        type=float,
        default=None,
        help="the image head's classifier-free guidance: 1 none, >1 away from the unconditional draw "
        "(needs pretraining with --uncond-prob)",
    )


def _args_chat(parser: argparse.ArgumentParser) -> None:
    _args_verb((), parser)
    parser.add_argument("--save-dir", default="chat-images", help="where drawn images are saved")


# The command table: `vlgpt NAME` runs the function (its docstring is the help) with the flags the
# second one adds. A new command is a `cmd_*` function, an `_args_*` function and a row here.
COMMANDS: dict[str, tuple] = {
    "world": (cmd_world, _args_world),
    "judge": (cmd_judge, _args_judge),
    "data": (None, _args_data),  # `vlgpt data check`
    "train": (cmd_train, _args_train),
    "reconstruct": (cmd_reconstruct, _args_reconstruct),
    "eval": (cmd_eval, _args_eval),
    "report": (cmd_report, _args_report),
    "caption": (cmd_caption, partial(_args_verb, ("image",))),
    "ask": (cmd_ask, partial(_args_verb, ("image", "question"))),
    "imagine": (cmd_imagine, _args_imagine),
    "edit": (cmd_edit, _args_edit),
    "chat": (cmd_chat, _args_chat),
    "serve": (cmd_serve, _args_serve),
    "export": (cmd_export, _args_export),
    "demo": (cmd_demo, _args_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlgpt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (run, add_arguments) in COMMANDS.items():
        doc = run.__doc__ if run is not None else "Dataset tools."
        command = sub.add_parser(name, help=doc.split("\n\n")[0], description=doc)
        add_arguments(command)
        if run is not None:
            command.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as error:
        print(f"vlgpt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlgpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
