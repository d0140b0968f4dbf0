"""docs/architecture.md lists every file of the package, so the map a newcomer reads stays true
(a sub-package's `__init__.py` of a docstring and a few re-exports excepted)."""

import ast
from pathlib import Path

import vlgpt

PACKAGE = Path(vlgpt.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def reexports(path: Path) -> bool:
    """A module of a docstring, imports and `__all__` only."""
    kinds = (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign)
    return all(isinstance(node, kinds) for node in ast.parse(path.read_text()).body)


def test_every_package_file_is_on_the_map():
    text = DOC.read_text()
    files = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".html")
        and not (p.name == "__init__.py" and p.parent != PACKAGE and reexports(p))
    ]
    missing = [f for f in files if f"`{f}`" not in text]
    assert not missing, f"add these to the Layout table of docs/architecture.md: {missing}"
