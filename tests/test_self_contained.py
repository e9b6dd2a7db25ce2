"""The tests need nothing outside the repository: their data lives in ``tests/data/``, each file listed with
its source and licence in ``tests/data/README.md``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"

# Spelled in pieces so that this file does not match its own patterns.
SHARED_CHECKOUT = ".." + "/shared"
SHARED_ABSOLUTE = "/work" + "/shared"
# Roots of places that are never inside a fresh clone: home and work directories, mounts.
OUTSIDE_ROOTS = tuple(f"/{name}/" for name in ("work", "home", "Users", "root", "mnt", "media", "srv", "opt"))
# The constant the tests once read the shared checkout through.
OLD_CONSTANT = re.compile(r"\b" + "SHA" + r"RED\b")
# Escaping the repository from its root constant: its parent(s), or REPO joined with "..".
ABOVE_REPO = re.compile(r"\bREPO\s*\.\s*parents?\b|\bREPO\s*/\s*[\"']\.\.")
# Path(__file__)[.resolve()].parent... or .parents[n]: more steps than the file is deep leave the repo.
PARENT_CHAIN = re.compile(r"Path\(\s*__file__\s*\)(?:\.resolve\(\))?((?:\.parent\b)+)")
PARENTS_INDEX = re.compile(r"Path\(\s*__file__\s*\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
# Files that only describe the data beside them.
METADATA = re.compile(r"^(README|LICEN[CS]E|SOURCE|NOTICE|COPYING)([-._].*)?$", re.IGNORECASE)


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def outside_references(text: str, depth: int) -> list[str]:
    """Lines of a test module that point at a file outside the repository.

    ``depth`` is how many ``.parent`` steps lead from the module to the repository root (2 for tests/x.py).
    """
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if SHARED_CHECKOUT in line or SHARED_ABSOLUTE in line:
            found.append(f"{number}: the shared checkout: {line.strip()}")
        if OLD_CONSTANT.search(line):
            found.append(f"{number}: the shared checkout's constant: {line.strip()}")
        if ABOVE_REPO.search(line):
            found.append(f"{number}: above the repository root: {line.strip()}")
        steps = [m.group(1).count(".parent") for m in PARENT_CHAIN.finditer(line)]
        steps += [int(m.group(1)) + 1 for m in PARENTS_INDEX.finditer(line)]
        if any(step > depth for step in steps):
            found.append(f"{number}: above the repository root: {line.strip()}")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value.strip()
            if value.startswith((*OUTSIDE_ROOTS, "~" + "/", ".." + "/")):
                found.append(f"{node.lineno}: a path outside the repository: {value!r}")
    return found


@pytest.mark.parametrize(
    "escape",
    [
        "DB = REPO" + ".parent / 'shared' / 'testdata' / 'x.mmdb'\n",
        f"LOG = Path('{SHARED_ABSOLUTE}/realdata/apache_logs/apache_access.log')\n",
        f"LOG = Path(__file__).parent / '{SHARED_CHECKOUT}/x.log'\n",
        f"LOG = Path('{OUTSIDE_ROOTS[1]}me/data/x.log')\n",
        "from tests.conftest import " + "SHA" + "RED\n",
        "ROOT = Path(__file__).resolve()" + ".parent" * 3 + "\n",
        "ROOT = Path(__file__).resolve().parents" + "[2]\n",
        "LOG = Path('" + ".." + "/elsewhere/x.log')\n",
    ],
)
def test_the_scan_sees_a_path_outside_the_repository(escape: str) -> None:
    assert outside_references(escape, depth=2)


def test_the_scan_lets_paths_inside_the_repository_pass() -> None:
    inside = (
        "REPO = Path(__file__).resolve().parent.parent\n"
        "DATA = Path(__file__).parents[0] / 'data'\n"
        "SAMPLE = REPO / 'sample_data' / 'events.csv'\n"
        "URL = '/search?q=x'\n"
        "ODD = tmp_path / 'data' / '..' / 'data'\n"
    )
    assert outside_references(inside, depth=2) == []


@pytest.mark.parametrize("path", python_files(), ids=lambda path: path.relative_to(TESTS).as_posix())
def test_no_path_outside_the_repository(path: Path) -> None:
    depth = len(path.relative_to(REPO).parts)  # tests/x.py: 2 steps up to the repository root
    found = outside_references(path.read_text(encoding="utf-8"), depth)
    lines = "\n".join(found)
    assert not found, f"{path.relative_to(REPO)} reads outside the repository (use tests/data/):\n{lines}"


def test_every_data_file_is_listed_with_its_source() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    data_files = [
        path.relative_to(DATA).as_posix()
        for path in sorted(DATA.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and not path.name.startswith(".")
        and not METADATA.match(path.name)
    ]
    assert data_files
    unlisted = [name for name in data_files if f"`{name}`" not in readme]
    assert not unlisted, f"tests/data/README.md does not list (with source and licence): {unlisted}"
