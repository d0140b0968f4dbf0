"""docs/architecture.md lists every file of the package, so the map a newcomer reads stays true
(a sub-package's `__init__.py` of a docstring and a few re-exports excepted)."""

from pathlib import Path

import vlgpt

PACKAGE = Path(vlgpt.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def test_every_package_file_is_on_the_map():
    text = DOC.read_text()
    files = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".html")
        and not (p.name == "__init__.py" and p.parent != PACKAGE and len(p.read_text().splitlines()) < 12)
    ]
    missing = [f for f in files if f"`{f}`" not in text]
    assert not missing, f"add these to the Layout table of docs/architecture.md: {missing}"
