"""The benchmarks' own helpers (bench/ is not a package: its modules are loaded by path)."""

from __future__ import annotations

import errno
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO


def load_bench_run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/bench_run.py, in ``sys.modules`` for the test (its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "bench_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", module)
    spec.loader.exec_module(module)
    return module


def checkout(root: Path) -> Path:
    """A source tree with a small ``sessionize`` package, as ``compile_package`` takes one."""
    package = root / "sessionize"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "core.py").write_text("def f() -> int:\n    return 2\n")
    return root


def test_compile_package_says_a_read_only_checkout_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a read-only checkout the benchmarks stopped with "a module does not compile": they say that
    the checkout is not writable, and what to do."""
    root = checkout(tmp_path / "checkout")
    bench_run = load_bench_run(monkeypatch)

    def refused(path: str, data: bytes, mode: int = 0o666) -> None:
        # What a read-only directory answers (the tests run as root here, which writes through its mode).
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr("importlib._bootstrap_external._write_atomic", refused)
    with pytest.raises(SystemExit) as stopped:
        bench_run.compile_package(root)
    message = str(stopped.value)
    assert f"{root / 'sessionize'}: the checkout is not writable (Permission denied: " in message
    assert "PYTHONPYCACHEPREFIX" in message and "does not compile" not in message
    assert not list(root.rglob("*.pyc"))


def test_compile_package_names_a_module_that_does_not_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = checkout(tmp_path / "checkout")
    bench_run = load_bench_run(monkeypatch)
    bench_run.compile_package(root)
    assert len(list((root / "sessionize" / "__pycache__").glob("*.pyc"))) == 2
    (root / "sessionize" / "broken.py").write_text("def f(:\n    pass\n")
    with pytest.raises(
        SystemExit, match=r"(?s)broken\.py: the module does not compile:\n.*SyntaxError: invalid syntax"
    ):
        bench_run.compile_package(root)
