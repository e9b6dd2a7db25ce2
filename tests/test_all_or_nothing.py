"""Review 58 F4: a run whose outputs cannot all be put in place changes none of them. A file that no rename
can replace (bind-mounted on its own, as ``docker -v host.csv:/out/r.csv`` mounts it; append-only with
``chattr +a``) is refused before the first output is renamed, and an output whose rename fails anyway puts
the ones renamed before it back as they were."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import Result

from tests.helpers import flat, run_cli, write_text

EVENTS = (
    "user_id,timestamp,url\n"
    "u1,2024-05-01T10:00:00Z,https://a.example/\n"
    ",2024-05-01T10:01:00Z,https://a.example/no-user\n"
    "u2,2024-05-01T10:05:00Z,https://a.example/b\n"
)
OLD = "old contents\n"
PATHS = {
    "memory": [],
    "buckets": ["--buckets", "3"],
    "incremental": ["--state", "STATE", "--output-dir", "OUT"],
}


def _run(tmp_path: Path, path: str) -> tuple[list[Path], Result]:
    """A run with every file output already there (``OLD``), the rejects file last."""
    events = write_text(tmp_path / "in" / "events.csv", EVENTS)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    files = [out / "users.csv", out / "r.csv"]
    options = ["--users-output", str(files[0]), "--rejects", str(files[1]), "--on-invalid", "skip"]
    if path == "incremental":
        options += ["--state", str(tmp_path / "state"), "--output-dir", str(tmp_path / "parts")]
    else:
        files.insert(0, out / "s.csv")
        options += ["-o", str(files[0]), *PATHS[path]]
    for file in files:
        if not file.exists():
            file.write_text(OLD)
    return files, run_cli(events, *options)


@contextlib.contextmanager
def _bind_mounted(target: Path, source: Path) -> Iterator[None]:
    source.write_text("the host's file\n")
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False)


@contextlib.contextmanager
def _append_only(target: Path) -> Iterator[None]:
    done = subprocess.run(["chattr", "+a", str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot chattr +a here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-a", str(target)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mount --bind needs root")
@pytest.mark.parametrize("path", list(PATHS))
def test_a_bind_mounted_output_is_refused_before_any_output_is_replaced(tmp_path: Path, path: str) -> None:
    (tmp_path / "out").mkdir()
    rejects = tmp_path / "out" / "r.csv"
    rejects.write_text(OLD)
    with _bind_mounted(rejects, tmp_path / "host.csv"):
        files, result = _run(tmp_path, path)
        assert result.exit_code == 1, result.output
        assert flat("it is a mount point") in flat(result.output)
        assert [file.read_text() for file in files[:-1]] == [OLD] * (len(files) - 1)
        assert rejects.read_text() == "the host's file\n"
    assert not (tmp_path / "state" / "CURRENT").exists()
    assert not any((tmp_path / "parts").glob("*/*.parquet"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in files)


@pytest.mark.parametrize("path", list(PATHS))
def test_an_append_only_output_is_refused_before_any_output_is_replaced(tmp_path: Path, path: str) -> None:
    (tmp_path / "out").mkdir()
    rejects = tmp_path / "out" / "r.csv"
    rejects.write_text(OLD)
    with _append_only(rejects):
        files, result = _run(tmp_path, path)
        assert result.exit_code == 1, result.output
        assert flat("append-only or immutable") in flat(result.output)
        assert [file.read_text() for file in files] == [OLD] * len(files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in files)


@pytest.mark.parametrize("path", list(PATHS))
def test_outputs_renamed_before_one_that_fails_are_put_back(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that fails where no check could foresee it (a device that fails, a file made immutable
    in between): simulated for the rejects file, the last of the outputs."""
    real = os.replace

    def failing(source: str, target: str, *args: object, **kwargs: object) -> None:
        if os.path.basename(str(target)) == "r.csv" and ".previous" not in os.path.basename(str(source)):
            raise OSError(errno.EIO, "Input/output error")
        real(source, target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing)  # the rename of sessionize.io.publish
    files, result = _run(tmp_path, path)
    assert result.exit_code == 1, result.output
    assert flat("Input/output error") in flat(result.output)
    assert [file.read_text() for file in files] == [OLD] * len(files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in files)


def test_a_new_output_renamed_before_one_that_fails_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.replace

    def failing(source: str, target: str, *args: object, **kwargs: object) -> None:
        if os.path.basename(str(target)) == "r.csv":
            raise OSError(errno.EIO, "Input/output error")
        real(source, target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing)  # the rename of sessionize.io.publish
    events = write_text(tmp_path / "in" / "events.csv", EVENTS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.csv").write_text(OLD)
    result = run_cli(events, "-o", out / "s.csv", "--rejects", out / "r.csv", "--on-invalid", "skip")
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["r.csv"]
    assert (out / "r.csv").read_text() == OLD


@pytest.mark.parametrize(
    ("option", "example"),
    [("-o", "sessions.parquet"), ("--users-output", "users.parquet"), ("--rejects", "rejects.csv")],
)
def test_a_folder_given_as_a_table_is_refused_with_a_name_for_that_table(
    tmp_path: Path, option: str, example: str
) -> None:
    """Review 58 F7: ``--users-output FOLDER`` was told to give a file name such as sessions.parquet."""
    events = write_text(tmp_path / "in" / "events.csv", EVENTS)
    folder = tmp_path / "folder"
    folder.mkdir()
    options = [option, str(folder)] + (["--on-invalid", "skip"] if option == "--rejects" else [])
    if option != "-o":
        options += ["-o", str(tmp_path / "s.csv")]
    result = run_cli(events, *options)
    assert result.exit_code == 1, result.output
    assert flat(f"Cannot write {option} {folder}: it is a directory. Give a file name ({example}).") in flat(
        result.output
    )
    assert list(folder.iterdir()) == [] and not (tmp_path / "s.csv").exists()
