"""The `vlgpt` command: a thin layer of typed functions over the library.

Each subcommand is one function; `main` turns known errors (bad input, unreadable files) into a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data.formats import FORMATS, DatasetError
from .data.images import ImageError
from .world.judge import JudgeError
from .world.scene import MAX_CANVAS, MIN_CANVAS, SceneError
from .world.splits import SPLITS

USER_ERRORS: tuple[type[Exception], ...] = (SceneError, DatasetError, ImageError, JudgeError, FileNotFoundError)


def cmd_world(args: argparse.Namespace) -> int:
    """Write Shapes-world rows as an imagefolder, LLaVA JSON or WebDataset dataset."""
    from .world.export import write_world

    out = write_world(args.out, args.n, split=args.split, fmt=args.format, seed=args.seed, size=args.size,
                      overwrite=args.overwrite)
    print(f"wrote {args.n} {args.split} rows ({args.format}) to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything end to end on the demo preset; reruns reuse finished stages."""
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlgpt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help=cmd_world.__doc__, description=cmd_world.__doc__)
    world.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    world.add_argument("--n", type=int, default=1000, help="number of rows (scenes)")
    world.add_argument("--split", choices=SPLITS, default="train", help="seed range; comp-test holds the held-out pairs")
    world.add_argument("--format", choices=FORMATS, default="imagefolder", help="dataset format")
    world.add_argument("--seed", type=int, default=0, help="first row's offset in the split's seed range")
    world.add_argument("--size", type=int, default=64, help=f"canvas side in pixels ({MIN_CANVAS}..{MAX_CANVAS})")
    world.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    world.set_defaults(func=cmd_world)

    demo = sub.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="run folder")
    demo.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    demo.set_defaults(func=cmd_demo)
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
