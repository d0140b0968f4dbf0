"""docs/architecture.md lists every file of the package, so the map a newcomer reads stays true
(a sub-package's `__init__.py` of a docstring and a few re-exports excepted)."""

import ast
import re
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


def layout_rows() -> list[tuple[str, list[str]]]:
    """(floor, files) of each row of the Layout table."""
    text = DOC.read_text()
    table = text[text.index("| floor | file | role |") : text.index("### Where is")]
    rows = []
    for line in table.splitlines()[2:]:
        if line.startswith("| "):
            floor, files = (cell.strip() for cell in line.strip("|").split("|")[:2])
            rows.append((floor, re.findall(r"`([^`]+)`", files)))
    return rows


def test_each_file_sits_on_the_floor_its_folder_names():
    """The table's floor column is the file's folder (`top` for the package root), so the table and
    the folders cannot tell two stories; the floors themselves are `tests/test_imports.py`'s."""
    rows = layout_rows()
    assert len(rows) > 40
    wrong = [
        (floor, f)
        for floor, files in rows
        for f in files
        if floor != (f.split("/")[0] if "/" in f else "top")
    ]
    assert not wrong, f"these rows name a floor other than their folder: {wrong}"


def test_every_path_the_architecture_page_names_exists():
    """Every `folder/file.py` the page points a newcomer to (the 'Where is' table included) is there."""
    named = set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.(?:py|html))`", DOC.read_text()))
    gone = [p for p in named if not (PACKAGE / p).is_file() and not (PACKAGE.parent / p).is_file()]
    assert not gone, f"docs/architecture.md names files that do not exist: {sorted(gone)}"
