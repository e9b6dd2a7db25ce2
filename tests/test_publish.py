"""All-or-nothing outputs on hostile targets: devices, pipes, symlinks, full disks, closed readers.

The CLI runs in a real subprocess here: what matters is the file descriptors and the exit status
a cron job or a shell pipeline sees.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sessionize import io as sio
from sessionize.errors import OutputError
from tests.helpers import EVENTS

BAD_ROW = "u-bad,not a timestamp,https://shop.example/\n"


def cli(
    *args: str | Path,
    stdout: int | None = subprocess.PIPE,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sessionize", *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
        preexec_fn=preexec_fn,
    )


def require_dev_full() -> None:
    """Skip where /dev/full does not fail writes with ENOSPC (missing, or emulated by a sandbox)."""
    try:
        fd = os.open("/dev/full", os.O_WRONLY)
    except OSError:
        pytest.skip("no /dev/full on this system")
    try:
        os.write(fd, b"x")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return
    finally:
        os.close(fd)
    pytest.skip("/dev/full accepts writes here (a sandbox's emulation)")


@pytest.fixture
def events_with_a_bad_row(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS.read_text(encoding="utf-8") + BAD_ROW, encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_symlink_to_dev_null_stays_a_symlink_to_a_device(
    tmp_path: Path, events_with_a_bad_row: Path
) -> None:
    link = tmp_path / "rejects.csv"
    link.symlink_to("/dev/null")
    done = cli(
        "run",
        events_with_a_bad_row,
        "--no-geo",
        "--on-invalid",
        "skip",
        "--rejects",
        link,
        "-o",
        tmp_path / "s.csv",
    )
    assert done.returncode == 0, done.stderr.decode()
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", "rejects.csv", "s.csv"]


@pytest.mark.slow
def test_a_symlink_to_a_regular_file_is_kept_and_its_target_replaced(tmp_path: Path) -> None:
    real = tmp_path / "data" / "sessions.csv"
    real.parent.mkdir()
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    done = cli("run", EVENTS, "--no-geo", "-o", link)
    assert done.returncode == 0, done.stderr.decode()
    assert link.is_symlink()
    assert pl.read_csv(real).height == 964


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
def test_stdout_on_a_full_device_is_an_error(unbuffered: bool) -> None:
    require_dev_full()
    with open("/dev/full", "wb") as full:
        done = cli(
            "run",
            EVENTS,
            "--no-geo",
            stdout=full.fileno(),
            env={"PYTHONUNBUFFERED": "1"} if unbuffered else {},
        )
    assert done.returncode != 0
    assert b"No space left" in done.stderr
    assert b'"status": "ok"' not in done.stderr


def test_an_output_on_a_full_device_is_an_error(tmp_path: Path) -> None:
    require_dev_full()
    done = cli("run", EVENTS, "--no-geo", "-o", "/dev/full", "--format", "csv")
    assert done.returncode != 0
    assert b"No space left" in done.stderr
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def into_a_reader_that_stops_early(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """``sessionize ARGS | (sleep 1; head -c 100)`` with an unbuffered stdout: the CLI's outcome."""
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; time.sleep(1); sys.stdout.buffer.write(sys.stdin.buffer.read(100))",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert reader.stdin is not None
    done = cli(*args, stdout=reader.stdin.fileno(), env={"PYTHONUNBUFFERED": "1"})
    reader.stdin.close()
    reader.stdin = None
    got, _ = reader.communicate(timeout=30)
    assert len(got) == 100
    return done


@pytest.mark.slow
def test_a_reader_that_stops_early_is_an_error_not_a_short_table() -> None:
    """The table does not fit in the pipe: the exit status says so."""
    done = into_a_reader_that_stops_early("run", EVENTS, "--no-geo")
    # As a shell reports a program that a closed pipe stopped: 141, quietly (no panel, no traceback).
    assert done.returncode == 141
    assert b"Traceback" not in done.stderr and b'"status": "ok"' not in done.stderr


@pytest.mark.slow
def test_stdout_gets_the_whole_table() -> None:
    done = cli("run", EVENTS, "--no-geo", env={"PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.count(b"\n") == 965  # the header and 964 sessions


def test_short_writes_are_resumed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A device that takes a few bytes a call (an unbuffered stdout on a slow pipe) gets them all."""
    target = tmp_path / "out.fifo"
    os.mkfifo(target)
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stdout.buffer.write(open({str(target)!r}, 'rb').read())"],
        stdout=subprocess.PIPE,
    )
    real = os.write
    calls = []

    def trickle(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        return real(fd, bytes(data[:7]))

    monkeypatch.setattr(os, "write", trickle)  # the module publish writes through
    with sio.Publication() as outputs:
        outputs.write_bytes(str(target), b"x" * 1000)
        outputs.publish_all()
    got, _ = reader.communicate(timeout=30)
    assert got == b"x" * 1000
    assert len(calls) >= 1000 // 7


def test_a_device_that_takes_nothing_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "out.fifo"
    os.mkfifo(target)
    reader = subprocess.Popen([sys.executable, "-c", f"open({str(target)!r}, 'rb').read()"])
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(OutputError, match="accepted no more bytes"), sio.Publication() as outputs:
        outputs.write_bytes(str(target), b"x" * 10)
        outputs.publish_all()
    reader.wait(timeout=30)


def test_nothing_is_published_when_one_output_fails(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    second.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError), sio.Publication() as outputs:
        outputs.write_table(pl.DataFrame({"x": [1]}), str(first))
        outputs.write_table(pl.DataFrame({"x": [2]}), str(second))
        raise RuntimeError("the report failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv"]
    assert second.read_text(encoding="utf-8") == "old\n"


def test_one_target_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="two outputs"), sio.Publication() as outputs:
        outputs.write_bytes(str(tmp_path / "x.html"), b"a")
        outputs.write_bytes(str(tmp_path / "." / "x.html"), b"b")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"), sio.Publication() as outputs:
        outputs.write_bytes(str(tmp_path), b"a")


def test_an_enospc_while_writing_names_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio.publish, "serialize", full)
    with pytest.raises(OutputError, match=r"sessions\.parquet: No space left"):
        sio.write_sessions(pl.DataFrame({"x": [1]}), str(tmp_path / "sessions.parquet"))
    assert list(tmp_path.iterdir()) == []


#: What Polars raises when the disk fills up under a Parquet file it writes.
PARQUET_DISK_FULL = (
    "parquet: File out of specification: underlying IO error: No space left on device (os error 28)"
)


@pytest.mark.parametrize("option", ["output", "pageviews_output", "users_output", "rejects"])
def test_a_full_disk_under_a_parquet_output_names_it_as_csv_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events_with_a_bad_row: Path, option: str
) -> None:
    """Polars' Parquet writer wraps the disk's ENOSPC in a ComputeError: it was "Unexpected error:
    ComputeError: ..." where a CSV or NDJSON output says "Cannot write ...: No space left on device"."""
    import sessionize

    outputs: dict[str, Any] = {
        name: tmp_path / f"{name}.csv" for name in ("output", "pageviews_output", "users_output", "rejects")
    }
    outputs[option] = tmp_path / f"{option}.parquet"
    written = pl.DataFrame.write_parquet

    def fills_the_disk(frame: pl.DataFrame, target: object, **options: object) -> None:
        written(frame, target, **options)  # type: ignore[arg-type]
        raise pl.exceptions.ComputeError(PARQUET_DISK_FULL)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", fills_the_disk)
    with pytest.raises(OutputError) as caught:
        sessionize.run([events_with_a_bad_row], no_geo=True, on_invalid="skip", **outputs)
    assert str(caught.value) == f"Cannot write {outputs[option]}: No space left on device."
    assert sorted(path.name for path in tmp_path.iterdir()) == ["events.csv"]


def test_a_parquet_table_on_a_really_full_disk_is_an_output_error(tmp_path: Path) -> None:
    """A 40 KiB tmpfs (root only) that cannot take the table: the same error as a CSV's, nothing left."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", disk], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    events = tmp_path / "events.csv"
    rows = "".join(
        f"user-{n},2024-05-01T10:{n % 60:02d}:{n % 59:02d}Z,https://shop.example/{n * 7919:x}/{n}\n"
        for n in range(4000)
    )
    events.write_text("user_id,timestamp,url\n" + rows, encoding="utf-8")
    try:
        for name in ("s.parquet", "s.csv"):
            done = cli("run", events, "--no-geo", "-o", disk / name, "--log-format", "json")
            assert done.returncode == 1, done.stderr.decode()
            record = json.loads(done.stderr.decode().strip().splitlines()[-1])
            assert record["error"] == "OutputError", record
            assert record["message"] == f"Cannot write {disk / name}: No space left on device.", record
            assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", disk], check=True)


def test_a_report_on_stdout_to_a_full_device_is_an_error(tmp_path: Path) -> None:
    require_dev_full()
    table = tmp_path / "sessions.parquet"
    assert cli("run", EVENTS, "--no-geo", "-o", table).returncode == 0
    with open("/dev/full", "wb") as full:
        done = cli("report", table, "-o", "-", stdout=full.fileno(), env={"PYTHONUNBUFFERED": "1"})
    assert done.returncode != 0
    assert b"No space left" in done.stderr


@pytest.mark.slow
def test_a_report_to_a_reader_that_stops_early_is_an_error(tmp_path: Path) -> None:
    table = tmp_path / "sessions.parquet"
    assert cli("run", EVENTS, "--no-geo", "-o", table).returncode == 0
    done = into_a_reader_that_stops_early("report", table, "-o", "-")
    assert done.returncode == 141


def _small_disk() -> None:
    """In the child: files may not grow past 20 kB (a full disk for every regular file it writes)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.slow
@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
def test_stdout_redirected_to_a_file_on_a_full_disk_is_an_error(tmp_path: Path, unbuffered: bool) -> None:
    """``sessionize run ev.csv > /small-disk/x.csv``: never a cut table with exit status 0."""
    target = tmp_path / "x.csv"
    with open(target, "wb") as handle:
        done = cli(
            "run", EVENTS, "--no-geo", "--log-format", "json", stdout=handle.fileno(), preexec_fn=_small_disk,
            env={"PYTHONUNBUFFERED": "1"} if unbuffered else {},
        )  # fmt: skip
    assert done.returncode != 0
    assert b'"status": "error"' in done.stderr
    assert b'"status": "ok"' not in done.stderr


@pytest.mark.slow
def test_an_output_file_on_a_full_disk_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "sessions.csv"
    target.write_text("the previous table\n", encoding="utf-8")
    done = cli("run", EVENTS, "--no-geo", "-o", target, preexec_fn=_small_disk)
    assert done.returncode != 0
    assert target.read_text(encoding="utf-8") == "the previous table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.csv"]


@pytest.mark.slow
def test_a_character_device_in_a_temp_dir_is_written_into_not_replaced(tmp_path: Path) -> None:
    """A device node made for the test (never the real /dev): a null device as the rejects file."""
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc}); needs root")
    events = tmp_path / "events.csv"
    events.write_text(EVENTS.read_text(encoding="utf-8") + BAD_ROW, encoding="utf-8")
    done = cli(
        "run", events, "--no-geo", "--on-invalid", "skip", "--rejects", device, "-o", tmp_path / "s.csv"
    )
    assert done.returncode == 0, done.stderr.decode()
    assert stat.S_ISCHR(device.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", "null", "s.csv"]


def test_a_part_written_in_the_background_is_freed_once_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writing thread holds a Parquet part only as the writer's Arrow table: the frame it came from
    is freed once converted, so a bucket in flight costs one copy of its table, not two."""
    import weakref

    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    alive_while_written: list[bool] = []
    original = pq.ParquetWriter.write_table
    released = threading.Event()  # set once the test has dropped its own reference

    def checking(writer: object, table: object, *args: object, **kwargs: object) -> None:
        assert released.wait(10)
        alive_while_written.append(part() is not None)
        original(writer, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", checking)
    target = tmp_path / "t.parquet"
    with sio.Publication() as outputs:
        sink = outputs.sink(str(target), background=True)
        for number in range(3):
            frame = pl.DataFrame({"n": range(number * 10, number * 10 + 10), "s": [f"v{number}"] * 10})
            part = weakref.ref(frame)
            released.clear()
            sink.write(frame)
            del frame
            released.set()
            sink._wait()  # this part's write is over: the next one's weak reference is then taken
        sink.finish(pl.DataFrame(schema={"n": pl.Int64, "s": pl.String}))
        outputs.publish_all()
    assert alive_while_written == [False, False, False]
    assert pl.read_parquet(target).get_column("n").to_list() == list(range(30))


def test_an_interrupted_discard_still_removes_every_temporary_file(tmp_path: Path) -> None:
    """A second Ctrl-C (or SIGTERM) while a failed run waits for a part in flight: every output's
    temporary file is still removed, and the interruption is raised after that."""
    outputs = sio.Publication()
    first = outputs.open(str(tmp_path / "sessions.parquet"))
    outputs.open(str(tmp_path / "rejects.csv"))
    waits = 0

    def interrupted_wait() -> None:
        nonlocal waits
        waits += 1
        raise KeyboardInterrupt

    first.drain = interrupted_wait
    assert len(list(tmp_path.iterdir())) == 2  # the two temporary files
    with pytest.raises(KeyboardInterrupt):
        outputs.discard()
    assert waits == 1
    assert list(tmp_path.iterdir()) == []


def test_a_stream_that_fails_leaves_the_files_as_they_were(
    tmp_path: Path, events_with_a_bad_row: Path
) -> None:
    """Streams are copied before any file is replaced: a full device among the outputs leaves the
    table unwritten, not published beside a failed rejects output."""
    require_dev_full()
    table = tmp_path / "sessions.csv"
    done = cli("run", events_with_a_bad_row, "--no-geo", "-o", table, "--on-invalid", "skip",
               "--rejects", "/dev/full")  # fmt: skip
    assert done.returncode != 0
    assert b"/dev/full" in done.stderr
    assert not table.exists()
    report = tmp_path / "report-run.csv"
    done = cli("run", EVENTS, "--no-geo", "-o", report, "--report", "/dev/full")
    assert done.returncode != 0 and not report.exists()


def test_a_failed_stream_does_not_wedge_a_new_incremental_state(
    tmp_path: Path, events_with_a_bad_row: Path
) -> None:
    """A fresh state whose first run fails on its rejects stream writes no partition, so the next run
    (with a working rejects output) is not refused for finding sessions without a state."""
    require_dev_full()
    state, out = tmp_path / "state", tmp_path / "out"
    common = ("--state", state, "--output-dir", out, "--no-geo", "--on-invalid", "skip",
              "--valid-until", "2100-01-01")  # fmt: skip
    failed = cli("run", events_with_a_bad_row, *common, "--rejects", "/dev/full")
    assert failed.returncode != 0
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    again = cli("run", events_with_a_bad_row, *common, "--rejects", tmp_path / "rejects.csv")
    assert again.returncode == 0, again.stderr.decode()
    assert any(out.rglob("*.parquet"))
    assert "u-bad" in (tmp_path / "rejects.csv").read_text(encoding="utf-8")


def test_the_temporary_file_of_another_output_with_a_longer_name_is_not_stale(tmp_path: Path) -> None:
    """``.out.20240501.csv.<pid>.<random>.tmp`` belongs to output ``out.20240501.csv``, not to ``out``:
    the digits after ``.out.`` are not a process id, and the file stays."""
    other = tmp_path / ".out.20240501.csv.999999999.abcdefgh.tmp"
    other.write_text("in use", encoding="utf-8")
    dead = tmp_path / ".out.999999999.abcdefgh.tmp"
    dead.write_text("left by a killed run", encoding="utf-8")
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(tmp_path / "out"), format="csv")
    assert other.exists()
    assert not dead.exists()


def test_stdout_under_two_names_is_refused(events_with_a_bad_row: Path) -> None:
    """``-o -`` and ``--rejects /dev/stdout`` are one stream: the two tables would be glued together. A
    usage error before any work (stop 57; it was refused when the second was opened, after the run)."""
    done = cli("run", events_with_a_bad_row, "--no-geo", "-o", "-", "--format", "csv",
               "--on-invalid", "skip", "--rejects", "/dev/stdout")  # fmt: skip
    assert done.returncode == 2
    assert b"stdout can carry only one output" in done.stderr
    assert done.stdout == b""


def test_a_closed_stdout_is_a_clear_error(tmp_path: Path) -> None:
    """``-o -`` with standard output closed (``>&-``): a clear error, not an AttributeError."""
    done = cli("run", EVENTS, "--no-geo", "-o", "-", "--format", "csv", preexec_fn=lambda: os.close(1))
    assert done.returncode != 0
    assert b"standard output is closed" in done.stderr
    assert b"AttributeError" not in done.stderr
    table = tmp_path / "sessions.csv"
    assert cli("run", EVENTS, "--no-geo", "-o", table).returncode == 0
    done = cli("report", table, "-o", "-", preexec_fn=lambda: os.close(1))
    assert done.returncode != 0
    assert b"standard output is closed" in done.stderr


def test_a_replaced_output_keeps_its_permissions(tmp_path: Path) -> None:
    """A table someone locked down (0600) stays so when a run replaces it (it was given the umask's
    0644: world-readable IP addresses and user ids); a new file gets the umask's mode."""
    locked = tmp_path / "locked.csv"
    locked.write_text("old\n", encoding="utf-8")
    locked.chmod(0o600)
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(locked), format="csv")
    assert locked.read_text(encoding="utf-8") == "x\n1\n"
    assert stat.S_IMODE(locked.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.csv"
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(fresh), format="csv")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to own files")
def test_root_replacing_an_output_keeps_its_owner(tmp_path: Path) -> None:
    owned = tmp_path / "owned.csv"
    owned.write_text("old\n", encoding="utf-8")
    os.chown(owned, 65534, 65534)
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(owned), format="csv")
    assert (owned.stat().st_uid, owned.stat().st_gid) == (65534, 65534)
    # In a sticky world-writable directory a stranger's file there is not handed root's output (they
    # could then change it, where they cannot replace a file of root's there).
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / "sessions.csv"
    planted.write_text("old\n", encoding="utf-8")
    planted.chmod(0o600)
    os.chown(planted, 65534, 65534)
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(planted), format="csv")
    assert planted.stat().st_uid == 0
    assert stat.S_IMODE(planted.stat().st_mode) == 0o600


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_inside_a_polars_callback_stops_the_run_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """SIGTERM (cron, systemd) or Ctrl-C while Polars runs one of the run's Python functions (the
    attribution's): exit 143 or 130 with the one JSON line of a stopped run, not a Polars error or a Rust
    panic with exit 1; no output written."""
    marker = tmp_path / "in-callback"
    out = tmp_path / "sessions.csv"
    script = (
        "import sys, time, pathlib, sessionize.attribution as a\n"
        "real = a._attribute_rows\n"
        "def slow(*args, **kwargs):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(2)\n"
        "    return real(*args, **kwargs)\n"
        "a._attribute_rows = slow\n"
        # The run's own code after the collects (before publication): where the signal is acted on.
        "import sessionize.io.publish as p\n"
        "publish = p.Publication.publish_all\n"
        "def later(self):\n"
        "    time.sleep(2)\n"
        "    return publish(self)\n"
        "p.Publication.publish_all = later\n"
        "from sessionize.cli import app\n"
        "app(sys.argv[1:])\n"
    )
    args = ["run", str(EVENTS), "-o", str(out), "--no-geo", "--log-format", "json"]
    process = subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the callback never ran"
            assert process.poll() is None
            time.sleep(0.02)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    outcome = json.loads(lines[0])
    assert outcome["status"] == "error" and outcome["exit_code"] == 128 + signum
    assert outcome["error"] == "StoppedError"
    assert "panicked" not in err.decode() and "Traceback" not in err.decode()
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to own files")
def test_a_symlink_another_user_planted_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    """Root in cron writing ``-o /tmp/sessions.csv``: a stranger's symlink there, pointing at a file of
    root's, is refused as the kernel's protected_symlinks would refuse to open it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n", encoding="utf-8")
    link = shared / "sessions.csv"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    with pytest.raises(OutputError, match="symlink that another user owns"):
        sio.write_sessions(pl.DataFrame({"x": [1]}), str(link), format="csv")
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    # root's own link there is followed.
    os.lchown(link, 0, 0)
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(link), format="csv")
    assert victim.read_text(encoding="utf-8") == "x\n1\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to own files")
@pytest.mark.parametrize("mode", [0o755, 0o777], ids=["owned-by-another-user", "world-writable-not-sticky"])
@pytest.mark.parametrize("option", ["-o", "--rejects", "--report"])
def test_a_symlink_planted_in_a_folder_another_user_can_write_is_refused(
    tmp_path: Path, mode: int, option: str
) -> None:
    """Root in cron writing into a folder a web server's user owns (or anyone can write, without the
    sticky bit): that user's symlink there, pointing at a file of root's, is refused on every output.
    Before, only sticky folders (``/tmp``) were checked: the run replaced the file the link led to with a
    table whose lines a stranger's URL wrote (``* * * * * root ...`` for ``/etc/cron.d``)."""
    folder = tmp_path / "www"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    folder.chmod(mode)
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n", encoding="utf-8")
    link = folder / "planted.out"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    events = tmp_path / "events.csv"
    events.write_text(
        'user_id,timestamp,url\nu1,2024-05-01T10:00:00Z,"/x\n* * * * * root touch /tmp/pwned\n"\n',
        encoding="utf-8",
    )
    outputs = {"-o": tmp_path / "sessions.csv", option: link}
    args = [a for name, path in outputs.items() for a in (name, str(path))]
    done = cli("run", events, "--no-geo", "-q", *args, "--on-invalid", "skip", "--format", "csv")
    assert done.returncode == 1, done.stderr.decode()
    assert "symlink that another user owns" in done.stderr.decode()
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    assert not (tmp_path / "sessions.csv").exists() or option == "-o"
    # root's own link in that folder is followed, as before.
    os.lchown(link, 0, 0)
    done = cli("run", events, "--no-geo", "-q", *args, "--on-invalid", "skip", "--format", "csv")
    assert done.returncode == 0, done.stderr.decode()
    assert victim.read_text(encoding="utf-8") != "keep me\n"


@pytest.mark.parametrize(
    "name", ["/dev/stdout", "/proc/self/fd/1", "/dev/fd/1", "/proc/thread-self/fd/1", "link"]
)
def test_stdout_by_name_appends_to_the_file_behind_a_redirect(tmp_path: Path, name: str) -> None:
    """cron's ``sessionize run ... -o /dev/stdout >> cron.log``: standard output by name is the log,
    written into, never replaced (the log's earlier lines were gone, and the run's later output went to
    the unlinked old file); also through a symlink to the descriptors' directory (``fd -> /proc/self/fd``,
    ``-o fd/1``)."""
    if name == "link":
        (tmp_path / "fd").symlink_to("/proc/self/fd")
        name = str(tmp_path / "fd" / "1")
    if not os.path.exists(name):
        pytest.skip(f"no {name} on this system")
    log = tmp_path / "cron.log"
    log.write_text("earlier line\n", encoding="utf-8")
    inode = log.stat().st_ino
    with log.open("ab") as appended:
        done = cli("run", EVENTS, "--no-geo", "-q", "-o", name, "--format", "csv", stdout=appended.fileno())
    assert done.returncode == 0, done.stderr.decode()
    assert log.stat().st_ino == inode
    text = log.read_text(encoding="utf-8")
    assert text.startswith("earlier line\nsession_id,")
    expected = tmp_path / "sessions.csv"
    assert cli("run", EVENTS, "--no-geo", "-q", "-o", expected).returncode == 0
    assert text == "earlier line\n" + expected.read_text(encoding="utf-8")


def test_rejects_to_stderr_by_name_keep_the_log_and_the_summary(
    tmp_path: Path, events_with_a_bad_row: Path
) -> None:
    """``--rejects /dev/stderr 2>> cron.log``: the rejects are appended to the log, and the run's JSON
    summary line after them too (it went to the unlinked old log)."""
    log = tmp_path / "cron.log"
    log.write_text("earlier line\n", encoding="utf-8")
    with log.open("ab") as appended:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sessionize",
                "run",
                str(events_with_a_bad_row),
                "--no-geo",
                "-o",
                str(tmp_path / "sessions.csv"),
                "--on-invalid",
                "skip",
                "--rejects",
                "/dev/stderr",
                "--format",
                "csv",
                "--log-format",
                "json",
            ],
            stderr=appended.fileno(),
            stdout=subprocess.PIPE,
            check=False,
            timeout=120,
        )
    assert done.returncode == 0
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "earlier line"
    assert lines[1].startswith("source_file,source_row,reject_reason")
    assert any("u-bad,not a timestamp," in line for line in lines[2:-1])
    assert json.loads(lines[-1])["status"] == "ok"


def test_a_report_to_stdout_by_name_appends(tmp_path: Path) -> None:
    table = tmp_path / "sessions.csv"
    assert cli("run", EVENTS, "--no-geo", "-q", "-o", table).returncode == 0
    log = tmp_path / "cron.log"
    log.write_text("earlier line\n", encoding="utf-8")
    with log.open("ab") as appended:
        done = cli("report", table, "-o", "/dev/stdout", stdout=appended.fileno())
    assert done.returncode == 0, done.stderr.decode()
    text = log.read_text(encoding="utf-8")
    assert text.startswith("earlier line\n<!DOCTYPE html>") or text.startswith(
        "earlier line\n<!doctype html>"
    )


def test_descriptor_names() -> None:
    from sessionize.io.publish import descriptor_of

    assert descriptor_of("/dev/stdout") == 1
    assert descriptor_of("/dev/fd/7") == 7
    assert descriptor_of(f"/proc/{os.getpid()}/fd/2") == 2
    assert descriptor_of("/proc/1/fd/2") is None  # another process's: a path like any other
    if os.path.exists("/proc/thread-self/fd"):
        assert descriptor_of("/proc/thread-self/fd/5") == 5
    assert descriptor_of("-") is None
    assert descriptor_of("/tmp/sessions.csv") is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to own files")
def test_a_directory_symlink_another_user_planted_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    """Root in cron writing ``-o /tmp/reports/sessions.csv``: a stranger's symlink ``/tmp/reports`` to a
    directory of root's is refused as its last part would be (it only looked at the last part)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "sessions.csv").write_text("keep me\n", encoding="utf-8")
    link = shared / "reports"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    for target in (link / "sessions.csv", link / ".." / "shared" / "reports" / "sessions.csv"):
        with pytest.raises(OutputError, match=r"goes through .*reports, a symlink that another user owns"):
            sio.write_sessions(pl.DataFrame({"x": [1]}), str(target), format="csv")
    assert (victim / "sessions.csv").read_text(encoding="utf-8") == "keep me\n"
    done = cli("run", EVENTS, "--no-geo", "-q", "-o", link / "sessions.csv")
    assert done.returncode != 0 and b"another user owns" in done.stderr
    assert (victim / "sessions.csv").read_text(encoding="utf-8") == "keep me\n"
    # A link of root's there, or another user's link outside a shared directory, is followed.
    os.lchown(link, 0, 0)
    sio.write_sessions(pl.DataFrame({"x": [1]}), str(link / "sessions.csv"), format="csv")
    assert (victim / "sessions.csv").read_text(encoding="utf-8") == "x\n1\n"
    private = tmp_path / "private"
    private.mkdir()
    (private / "reports").symlink_to(victim)
    os.lchown(private / "reports", 65534, 65534)
    sio.write_sessions(pl.DataFrame({"x": [2]}), str(private / "reports" / "sessions.csv"), format="csv")
    assert (victim / "sessions.csv").read_text(encoding="utf-8") == "x\n2\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to own files")
@pytest.mark.parametrize(
    "options",
    [
        ["--state", "{shared}/state", "--output-dir", "{link}"],
        ["--state", "{link}", "--output-dir", "{shared}/out"],
        ["--state", "{shared}/state", "--output-dir", "{shared}/out", "--pageviews-output", "{link}"],
        ["--engine", "dask", "-o", "{link}"],
        ["--buckets", "2", "--temp-dir", "{link}", "-o", "{shared}/sessions.parquet"],
    ],
    ids=["output-dir", "state", "pageviews-dir", "dask", "temp-dir"],
)
def test_directory_outputs_through_a_planted_symlink_are_refused(tmp_path: Path, options: list[str]) -> None:
    """The directories an engine writes into itself (incremental partitions and state, Dask parts, the
    bucketed engine's spill) are refused through a stranger's symlink in a shared directory, as files are."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    link = shared / "planted"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    args = [option.format(shared=shared, link=link) for option in options]
    done = cli("run", EVENTS, "--no-geo", "-q", *args)
    assert done.returncode != 0
    assert b"a symlink that another user owns" in done.stderr, done.stderr.decode()
    assert list(victim.iterdir()) == []


#: A run with five outputs under ``sessionize`` in a process of its own, one of whose system calls is made
#: to fail or to bring a signal: ``{call}`` (os.fsync or os.replace) does ``{act}`` on its ``{nth}``th use.
_FAULTY_RUN = """
import errno, os, signal, sys
real = os.{call}
uses = [0]
def faulty(*args):
    uses[0] += 1
    if uses[0] == {nth}:
        {act}
    return real(*args)
os.{call} = faulty
from sessionize.cli import main
sys.argv = ["sessionize", "run", *sys.argv[1:]]
main()
"""
OUTPUTS = ("sessions.csv", "pageviews.csv", "users.csv", "rejects.csv", "report.html")


def faulty_run(
    tmp_path: Path, events: Path, *, call: str, act: str, nth: int
) -> subprocess.CompletedProcess[bytes]:
    for name in OUTPUTS:
        (tmp_path / name).write_text("OLD\n", encoding="utf-8")
    script = _FAULTY_RUN.format(call=call, act=act, nth=nth)
    outputs = [tmp_path / name for name in OUTPUTS]
    args = [events, "--no-geo", "-o", outputs[0], "--pageviews-output", outputs[1], "--users-output",
            outputs[2], "--on-invalid", "skip", "--rejects", outputs[3], "--report", outputs[4],
            "--log-format", "json"]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, check=False, timeout=120
    )


@pytest.mark.parametrize("nth", [2, 5])
def test_a_failing_fsync_leaves_every_output_as_it_was(
    tmp_path: Path, events_with_a_bad_row: Path, nth: int
) -> None:
    """Each output was flushed to disk and renamed before the next was flushed: a full disk or a failing
    device at the second output's fsync (NFS, quotas, thin provisioning report it there) left the first
    output new and the others old (review 52). Every output is flushed first now, then all are renamed."""
    act = "raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))"
    done = faulty_run(tmp_path, events_with_a_bad_row, call="fsync", act=act, nth=nth)
    assert done.returncode == 1, done.stderr
    assert "No space left on device" in json.loads(done.stderr.decode().splitlines()[-1])["message"]
    assert [(tmp_path / name).read_text(encoding="utf-8") for name in OUTPUTS] == ["OLD\n"] * len(OUTPUTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*OUTPUTS, "events.csv"])


@pytest.mark.parametrize("nth", [1, 2, 5])
def test_a_signal_while_the_outputs_are_renamed_waits_for_all_of_them(
    tmp_path: Path, events_with_a_bad_row: Path, nth: int
) -> None:
    """SIGTERM between two renames stopped the run with some outputs new and some old, and a message that
    said no output was written (review 52). It waits now until every output is in place, and the run
    stops with 143 saying so."""
    done = faulty_run(
        tmp_path, events_with_a_bad_row, call="replace", act="os.kill(os.getpid(), signal.SIGTERM)", nth=nth
    )
    assert done.returncode == 143, done.stderr
    outcome = json.loads(done.stderr.decode().splitlines()[-1])
    assert outcome["message"] == "Stopped by SIGTERM after every output was written: they are complete."
    contents = [(tmp_path / name).read_text(encoding="utf-8") for name in OUTPUTS]
    assert "OLD\n" not in contents
    assert pl.read_csv(tmp_path / "sessions.csv").height == 964
    assert pl.read_csv(tmp_path / "rejects.csv").height == 1


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    """A folder on a read-only bind mount (root only; skipped where it cannot be mounted): root may write
    into a folder of mode 555, not into a read-only file system."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    mounts: list[list[str | Path]] = [
        ["mount", "--bind", folder, folder],
        ["mount", "-o", "remount,bind,ro", folder],
    ]
    for command in mounts:
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", folder], capture_output=True, check=False)
            pytest.skip(f"cannot mount read-only here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", folder], check=True)


@pytest.mark.parametrize("option", ["-o", "--report", "--rejects", "--pageviews-output", "--users-output"])
def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_any_work(
    tmp_path: Path, read_only_dir: Path, option: str
) -> None:
    """Review of stop 57: every output is checked before any work, yet one in a folder where no file can
    be made (a read-only file system) failed only when it was written, after the whole run. It is refused
    at the start, naming the folder and why, and nothing is written."""
    events = tmp_path / "events.csv"
    events.write_text(EVENTS.read_text(encoding="utf-8") + BAD_ROW, encoding="utf-8")
    target = read_only_dir / ("out.csv" if option != "--report" else "report.html")
    others: list[str | Path] = [] if option == "-o" else ["-o", tmp_path / "sessions.csv"]
    done = cli(
        "run", events, option, target, *others, "--on-invalid", "skip", "--no-geo", "--log-format", "json"
    )
    assert done.returncode == 1, done.stderr.decode()
    record = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert record["message"] == (
        f"Cannot write {target}: the directory {read_only_dir} is on a read-only file system. Write "
        "somewhere else."
    ), record
    assert "rows_read" not in record and not (tmp_path / "sessions.csv").exists()
