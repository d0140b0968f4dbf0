"""The package's floors: each folder is a floor, and a module imports only its own floor and the ones
below it (function-level imports included); no import cycles; inference never imports training.

    core -> world -> data -> models -> inference -> eval, serve -> train -> cli, demo
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vlgpt

PACKAGE = Path(vlgpt.__file__).parent
TOP_FLOOR = {"vlgpt.cli", "vlgpt.demo", "vlgpt.export", "vlgpt.__main__"}  # they act on whole runs

# Bottom up; the folders of one floor may import each other. docs/architecture.md draws the same.
FLOORS = (
    ("vlgpt.core",),  # configs, model-folder files, devices, prompts, text tokenizers
    ("vlgpt.world",),  # the Shapes world and its judge
    ("vlgpt.data",),  # images, dataset formats, sources, sequences, samples
    ("vlgpt.models",),  # one component per file, and their folders saved and loaded
    ("vlgpt.inference",),  # the codec, generation, the pipeline
    ("vlgpt.eval", "vlgpt.serve"),
    ("vlgpt.train",),  # the engine and the stages
    ("vlgpt", *sorted(TOP_FLOOR)),  # the package's front door and the command line
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every vlgpt module `path` imports anywhere in its body (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level <= package.count(".") + 1, (
                    f"{path}:{node.lineno}: relative import beyond vlgpt"
                )
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import sequences` names a module
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
                elif target in known:
                    found.add(target)
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def floor_of(module: str) -> int | None:
    """The floor of a module: that of the longest listed name it is or lies under."""
    best = None
    for level, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (level, name)
    return None if best is None else best[0]


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a floor above its own, as 'a (floor i) imports b (floor j)'."""
    found = []
    for name, imported in sorted(edges.items()):
        for target in sorted(imported):
            if floor_of(target) > floor_of(name):
                found.append(f"{name} (floor {floor_of(name)}) imports {target} (floor {floor_of(target)})")
    return found


def test_every_module_stands_on_a_floor():
    """A new module at the package root, or a new folder, is given its floor in FLOORS first."""
    listed = {name for names in FLOORS for name in names}
    assert not [m for m in modules() if ".".join(m.split(".")[:2]) not in listed]


def test_no_module_imports_a_floor_above_its_own():
    assert not upward_imports(graph()), "\n".join(upward_imports(graph()))


def test_the_floor_check_finds_an_upward_import():
    edges = {"vlgpt.data.samples": {"vlgpt.core.prompts"}, "vlgpt.world.scene": {"vlgpt.data.formats"}}
    assert upward_imports(edges) == ["vlgpt.world.scene (floor 1) imports vlgpt.data.formats (floor 2)"]
    assert floor_of("vlgpt.cli") == len(FLOORS) - 1 and floor_of("vlgpt.core.config") == 0


def test_the_import_graph_is_read():
    edges = graph()
    assert "vlgpt.models.loading" in edges["vlgpt.inference.pipeline"]
    assert "vlgpt.data.sequences" in edges["vlgpt.inference.pipeline"]  # `from .data import sequences as S`


def test_no_import_cycles():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_inference_does_not_import_training():
    offenders = {
        name: sorted(i for i in imported if i.startswith("vlgpt.train"))
        for name, imported in graph().items()
        if not name.startswith("vlgpt.train") and name not in TOP_FLOOR
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_loading_a_model_does_not_pull_in_training():
    code = (
        "import sys, vlgpt.inference.pipeline, vlgpt.serve.app, vlgpt.eval.full; "
        "print([m for m in sys.modules if m.startswith('vlgpt.train')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_vlgpt_silences_torchaos_import_noise_and_only_that():
    """torchao, when installed, logs failed CUDA-kernel loads and an Enum deprecation on import (peft and
    transformers import it); importing vlgpt first drops exactly those two, and other warnings pass."""
    pytest.importorskip("torchao")
    code = "import logging, vlgpt, peft; logging.getLogger('torchao').warning('kept: something else')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Failed to load" not in out.stderr and "Enum subclass" not in out.stderr, out.stderr
    assert "kept: something else" in out.stderr
