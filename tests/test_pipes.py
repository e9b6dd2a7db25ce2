"""Inputs that can be read only once: a named pipe or a process substitution (``<(zcat events.csv.gz)``,
which the shell passes as ``/dev/fd/63``).

Review 46: such an input read 0 rows with exit 0, because the compression check and the CSV readers
read its first bytes before the reader did. It is now read once, whole, as standard input is.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.helpers import APACHE_LOG, EVENTS, HAS_DASK, SAMPLE_DATA, listing, run_cli, words

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


@contextlib.contextmanager
def fifo(tmp_path: Path, data: bytes, name: str = "pipe") -> Iterator[Path]:
    """A named pipe that a thread fills with ``data`` once a reader opens it."""
    path = tmp_path / name
    os.mkfifo(path)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield path
    finally:
        if writer.is_alive():
            # Nothing read it (a refusal): open and close the other end so the writer's open returns.
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=10)
        assert not writer.is_alive()


def _ndjson(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    pl.read_csv(EVENTS, infer_schema=False).write_ndjson(path)
    return path


INPUTS: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "csv": (lambda tmp_path: EVENTS, ["--input-format", "csv"]),
    "parquet": (lambda tmp_path: SAMPLE_DATA / "events.parquet", ["--input-format", "parquet"]),
    "ndjson": (_ndjson, ["--input-format", "ndjson"]),
    "combined": (lambda tmp_path: APACHE_LOG, ["--input-format", "combined", "--on-invalid", "skip"]),
}


@pytest.mark.parametrize("engine", [[], ["--buckets", "3"]], ids=["memory", "buckets"])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_a_pipe_is_read_whole_as_the_file_is(tmp_path: Path, kind: str, engine: list[str]) -> None:
    make, flags = INPUTS[kind]
    source = make(tmp_path)
    common: list[str | Path] = ["--no-geo", *flags, *engine, "--temp-dir", tmp_path, "-q"]
    from_file = run_cli(source, "-o", tmp_path / "file.parquet", *common)
    assert from_file.exit_code == 0, from_file.output
    with fifo(tmp_path, source.read_bytes()) as pipe:
        from_pipe = run_cli(pipe, "-o", tmp_path / "pipe.parquet", *common)
    assert from_pipe.exit_code == 0, from_pipe.output
    expected = pl.read_parquet(tmp_path / "file.parquet")
    assert expected.height > 100
    assert_frame_equal(pl.read_parquet(tmp_path / "pipe.parquet"), expected)


def test_a_gzipped_pipe_is_read_and_a_bzip2_one_is_named(tmp_path: Path) -> None:
    expected = run_cli(EVENTS, "--no-geo", "-o", tmp_path / "file.parquet", "-q")
    assert expected.exit_code == 0, expected.output
    with fifo(tmp_path, gzip.compress(EVENTS.read_bytes())) as pipe:
        result = run_cli(pipe, "--input-format", "csv", "--no-geo", "-o", tmp_path / "gz.parquet", "-q")
    assert result.exit_code == 0, result.output
    assert_frame_equal(pl.read_parquet(tmp_path / "gz.parquet"), pl.read_parquet(tmp_path / "file.parquet"))
    (tmp_path / "pipe").unlink()

    with fifo(tmp_path, bz2.compress(EVENTS.read_bytes())) as pipe:
        result = run_cli(pipe, "--input-format", "csv", "--no-geo", "-o", tmp_path / "bz.parquet")
    assert result.exit_code == 1
    assert f"{pipe} is bzip2-compressed" in words(result.stderr)
    assert "Decompress it in the pipe with bunzip2 -c" in words(result.stderr)
    assert not (tmp_path / "bz.parquet").exists()


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--state", "STATE", "--output-dir", "OUT"], id="incremental"),
        pytest.param(
            ["--engine", "dask", "-o", "OUT/"],
            id="dask",
            marks=pytest.mark.skipif(not HAS_DASK, reason="Dask is not installed"),
        ),
    ],
)
def test_engines_that_read_files_again_name_the_pipe(tmp_path: Path, flags: list[str]) -> None:
    args = [str(tmp_path / f) if f in ("STATE", "OUT", "OUT/") else f for f in flags]
    with fifo(tmp_path, EVENTS.read_bytes()) as pipe:
        result = run_cli(pipe, "--input-format", "csv", "--no-geo", *args)
    assert result.exit_code == 2
    assert f"{pipe}" in words(result.stderr) and "pipe" in words(result.stderr)
    assert listing(tmp_path) == ["pipe"]


@pytest.mark.slow
def test_process_substitution_in_a_shell(tmp_path: Path) -> None:
    """What users type: bash passes ``<(...)`` as /dev/fd/63."""
    command = f'"{sys.executable}" -m sessionize run <(gzip -c "{EVENTS}") --input-format csv --no-geo'
    done = subprocess.run(
        ["bash", "-c", f"{command} -q -o out.csv"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert pl.read_csv(tmp_path / "out.csv").height == 964


def test_a_named_pipe_called_tsv_is_read_as_tsv(tmp_path: Path) -> None:
    """Review 47: a named pipe called ``*.tsv`` was opened to tell a Snowplow enriched TSV from another,
    which took its first bytes (the writer then failed) and the reader's open waited for ever."""
    source = tmp_path / "events.tsv"
    pl.read_csv(EVENTS, infer_schema=False).write_csv(source, separator="\t")
    from_file = run_cli(source, "--no-geo", "-o", tmp_path / "file.parquet", "-q")
    assert from_file.exit_code == 0, from_file.output
    with fifo(tmp_path, source.read_bytes(), name="live.tsv") as pipe:
        result = run_cli(pipe, "--no-geo", "-o", tmp_path / "pipe.parquet", "-q")
    assert result.exit_code == 0, result.output
    assert_frame_equal(pl.read_parquet(tmp_path / "pipe.parquet"), pl.read_parquet(tmp_path / "file.parquet"))


def test_a_pipe_inside_a_file_url_directory_is_not_opened(tmp_path: Path) -> None:
    """Review 47: the compression check opened every file behind a ``file://`` URL, and a named pipe
    there (no writer) blocked the run for ever. Files on this machine are checked; pipes and devices,
    and objects on remote storage (one request each), are not opened before the run reads them."""
    pytest.importorskip("fsspec")
    from sessionize import io as sio

    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.csv").write_bytes(EVENTS.read_bytes())
    os.mkfifo(folder / "b.csv")
    found: list[list[sio.InputFile]] = []
    resolver = threading.Thread(
        target=lambda: found.append(sio.resolve_inputs([f"file://{folder}"], urls=True)), daemon=True
    )
    resolver.start()
    resolver.join(timeout=30)
    if resolver.is_alive():  # unblock it, then fail
        with contextlib.suppress(OSError):
            os.close(os.open(folder / "b.csv", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("resolving a file:// directory with a named pipe in it waited on the pipe")
    # Listed as the local directory is: its files, not the pipe.
    assert [source.path for source in found[0]] == [f"file://{folder}/a.csv"]
    assert [source.path for source in sio.resolve_inputs([folder])] == [f"{folder}/a.csv"]


@pytest.mark.parametrize("kind", ["csv", "ndjson", "combined"])
def test_an_empty_pipe_is_an_empty_input(tmp_path: Path, kind: str) -> None:
    """An empty pipe holds no events, as an empty file: an empty table with the full schema, exit 0."""
    empty = tmp_path / f"empty.{'log' if kind == 'combined' else kind}"
    empty.write_bytes(b"")
    from_file = run_cli(empty, "--input-format", kind, "--no-geo", "-o", tmp_path / "file.parquet", "-q")
    assert from_file.exit_code == 0, from_file.output
    with fifo(tmp_path, b"") as pipe:
        result = run_cli(pipe, "--input-format", kind, "--no-geo", "-o", tmp_path / "pipe.parquet", "-q")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "pipe.parquet")
    assert table.height == 0
    assert_frame_equal(table, pl.read_parquet(tmp_path / "file.parquet"))
