"""Issue 18, point 9: errors that were tracebacks in disguise name the file or option and the fix.

Also the real disk-full case: a small tmpfs, mounted when the tests run as root (skipped with the
reason otherwise), as --temp-dir and as the place of the output.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

import sessionize
from sessionize.cli import app
from sessionize.errors import MalformedRowsError, OutputError, UnreadableInputError, UsageError
from tests.helpers import EVENTS


def message(result: object) -> str:
    return " ".join(str(getattr(result, "stderr", "")).replace("│", "").split())


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` (root only): a real full disk, not a simulation."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_temp_dir_while_spilling_is_a_clear_error(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        with pytest.raises(OutputError, match=r"temporary bucket files to .*No space left.*--temp-dir"):
            sessionize.run([EVENTS], no_geo=True, buckets=3, temp_dir=disk)
        assert list(disk.iterdir()) == []


def test_a_full_temp_dir_while_decompressing_is_a_clear_error(tmp_path: Path) -> None:
    packed = tmp_path / "events.csv.gz"
    packed.write_bytes(gzip.compress(EVENTS.read_bytes()))
    with small_disk(tmp_path) as disk:
        with pytest.raises(OutputError, match=r"temporary files to .*No space left.*--temp-dir"):
            sessionize.run([packed], no_geo=True, buckets=3, temp_dir=disk)
        assert list(disk.iterdir()) == []


@pytest.mark.slow
def test_an_output_on_a_full_disk_is_an_error_that_leaves_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        result = CliRunner().invoke(app, ["run", str(EVENTS), "--no-geo", "-o", str(disk / "s.csv")])
        assert result.exit_code == 1
        assert "No space left" in message(result)
        assert list(disk.iterdir()) == []
        # stdout redirected to a file on the full disk: the run fails, whatever the buffering.
        with open(disk / "piped.csv", "wb") as handle:
            done = subprocess.run(
                [sys.executable, "-m", "sessionize", "run", str(EVENTS), "--no-geo"],
                stdout=handle,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                check=False,
            )
        assert done.returncode != 0 and b"No space left" in done.stderr


@pytest.mark.parametrize("kind", ["file", "broken-symlink"])
@pytest.mark.parametrize("option", ["--state", "--output-dir"])
def test_state_and_output_dir_that_are_not_directories(tmp_path: Path, kind: str, option: str) -> None:
    bad = tmp_path / "bad"
    if kind == "file":
        bad.write_text("", encoding="utf-8")
    else:
        bad.symlink_to(tmp_path / "missing")
    paths = {"--state": str(tmp_path / "st"), "--output-dir": str(tmp_path / "out")}
    paths[option] = str(bad)
    result = CliRunner().invoke(
        app,
        ["run", str(EVENTS), "--no-geo", "--state", paths["--state"], "--output-dir", paths["--output-dir"]],
    )
    assert result.exit_code == 2
    text = message(result)
    assert option in text and ("is a file" in text or "does not exist" in text)
    assert "Traceback" not in result.output and "FileExistsError" not in text


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson"])
def test_an_input_column_named_like_the_row_numbers(tmp_path: Path, fmt: str) -> None:
    frame = pl.DataFrame({"user_id": ["u"], "timestamp": ["2024-05-01T10:00:00Z"], "_row": [7]})
    path = tmp_path / f"events.{fmt}"
    getattr(frame, f"write_{fmt}")(path)
    with pytest.raises(UnreadableInputError, match=r"column named '_row'.*Rename that column"):
        sessionize.run([path], no_geo=True)


def test_a_report_input_with_infinite_or_nan_durations(tmp_path: Path) -> None:
    table = tmp_path / "sessions.csv"
    sessionize.run([EVENTS], no_geo=True, output=table)
    text = table.read_text(encoding="utf-8").splitlines()
    header = text[0].split(",")
    at = header.index("duration_s")
    for number, value in ((1, "1e400"), (2, "nan"), (3, "-inf")):
        cells = text[number].split(",")
        cells[at] = value
        text[number] = ",".join(cells)
    table.write_text("\n".join(text) + "\n", encoding="utf-8")
    result = sessionize.make_report([str(table)], output=str(tmp_path / "report.html"))
    assert result.data.sessions == 964
    assert (tmp_path / "report.html").stat().st_size > 0


def test_one_malformed_ndjson_line_is_one_rejected_row_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(
        b'{"user_id":"u1","timestamp":"2024-05-01T10:00:00Z"}\n'
        b'{"user_id":"u\xff2","timestamp":"2024-05-01T10:00:00Z"}\n'
        b"\n"
        b'{"user_id":"u3","timestamp":"2024-05-01T10:00:00Z",}\n'
        b'{"user_id":"u4","timestamp":"2024-05-01T10:01:00Z"}\n'
    )
    with pytest.raises(MalformedRowsError, match=r"line 2: malformed_json; line 4: malformed_json"):
        sessionize.run([path], no_geo=True)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([path], no_geo=True, on_invalid="skip", rejects=rejects)
    assert sorted(result.sessions.get_column("user_id").to_list()) == ["u1", "u4"]
    assert pl.read_csv(rejects).select("source_row", "reject_reason").rows() == [
        (2, "malformed_json"),
        (4, "malformed_json"),
    ]
    assert result.rows_read == 4 == result.events_read + result.rejected


def test_an_output_that_is_a_directory_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessionize.io import read

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input was read before the output was checked")

    monkeypatch.setattr(read, "read_file", never)
    with pytest.raises(OutputError, match="is a directory"):
        sessionize.run([EVENTS], no_geo=True, output=tmp_path)
    with pytest.raises((OutputError, UsageError), match="directory"):
        sessionize.run([EVENTS], no_geo=True, on_invalid="skip", rejects=tmp_path)


@pytest.mark.parametrize("privacy", [{}, {"anonymize_ip": True}], ids=["plain", "anonymize-ip"])
def test_an_ndjson_file_of_malformed_lines_only_keeps_its_rows(
    tmp_path: Path, privacy: dict[str, Any]
) -> None:
    """Counts in = counts out + rejected, also when no line of a file parses."""
    path = tmp_path / "events.ndjson"
    path.write_bytes(b'{"user_id":"u1","ip":"83.149.9.216",\nnot json at all\n')
    with pytest.raises(MalformedRowsError, match=r"line 1: malformed_json; line 2: malformed_json"):
        sessionize.run([path], no_geo=True, **privacy)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([path], no_geo=True, on_invalid="skip", rejects=rejects, **privacy)
    assert (result.rows_read, result.events_read, result.rejected) == (2, 0, 2)
    table = pl.read_csv(rejects)
    assert table.select("source_row", "reject_reason").rows() == [
        (1, "malformed_json"),
        (2, "malformed_json"),
    ]
    # The raw line may hold an address: with a privacy option it is left out, as for any rejected row.
    assert ("raw_line" in table.columns) == (not privacy)
    assert ("83.149.9.216" in rejects.read_text(encoding="utf-8")) == (not privacy)
