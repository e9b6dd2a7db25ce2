"""Errors about the inputs themselves (review 56): the advice they give is safe to follow and names the
real cause, and inputs named more than once are read once without a false error."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

import sessionize
from sessionize.cli import app
from tests.helpers import APACHE_LOG, CITY_DB, EVENTS, HAS_DASK, REPO, words

LINES = "user_id,timestamp,url\n" + "".join(
    f"u{i % 7},2024-05-01T10:{i % 60:02d}:00Z,/p{i}\n" for i in range(300)
)


def run_json(*args: object, stdin: bytes | None = None, cwd: Path | None = None) -> dict[str, object]:
    """``sessionize run ARGS --no-geo --log-format json`` in a child process: its outcome line."""
    done = subprocess.run(
        [sys.executable, "-m", "sessionize", "run", *map(str, args), "--no-geo", "--log-format", "json"],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        check=False,
        timeout=300,
    )
    outcome: dict[str, object] = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert outcome["exit_code"] == done.returncode
    return outcome


@pytest.mark.parametrize(
    "name",
    ["access.log.gz", "events.csv.gz", "events.csv.bz2", "events.csv", "ACCESS.LOG.GZ", "access.log.Gz"],
)
def test_the_command_a_wrongly_compressed_file_gets_never_overwrites_it(tmp_path: Path, name: str) -> None:
    """bzip2 data named ``.gz``: the advice was ``bunzip2 -c access.log.gz | gzip > access.log.gz``, which
    empties the file before bunzip2 reads it (a 10,000-line log left as an empty gzip). Followed as
    given, the command now leaves the input as it was and writes a file sessionize reads."""
    source = tmp_path / name
    text = APACHE_LOG.read_bytes() if ".log" in name.lower() else LINES.encode()
    source.write_bytes(bz2.compress(text))
    before = source.read_bytes()
    outcome = run_json(source.name, "-o", "o.csv", cwd=tmp_path)
    message = str(outcome["message"])
    assert outcome["exit_code"] == 1 and "is bzip2-compressed" in message, message
    command = message.split("Decompress it first: ", 1)[1].rstrip(".")
    if shutil.which("bunzip2") is None or shutil.which("gzip") is None:
        pytest.skip("bunzip2 or gzip is not installed")
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=60)
    assert source.read_bytes() == before
    target = tmp_path / command.rsplit("> ", 1)[1].strip("'")
    # Not the input on a file system that ignores case either (macOS, Windows, SMB: review 57 F3).
    assert target.name.casefold() != source.name.casefold() and target.name.endswith(".gz")
    assert gzip.decompress(target.read_bytes()) == text
    assert sessionize.run([target], no_geo=True, on_invalid="skip").rows_read > 0


def test_a_directory_or_pattern_whose_files_were_named_before_is_no_error(tmp_path: Path) -> None:
    """`run ov/a.csv ov` and `run ov ov` said "The directory ov holds no supported files" (its files had
    been added already); each file is read once."""
    folder = tmp_path / "ov"
    folder.mkdir()
    (folder / "a.csv").write_text(LINES, encoding="utf-8")
    (folder / "b.csv").write_text(LINES.replace(",u", ",v"), encoding="utf-8")
    for args in (
        ["ov"],
        ["ov/a.csv", "ov"],
        ["ov/a.csv", "ov/b.csv", "ov"],
        ["ov", "ov"],
        ["ov/*.csv", "ov"],
    ):
        outcome = run_json(*args, "-o", "o.csv", cwd=tmp_path)
        assert outcome["exit_code"] == 0, (args, outcome)
        assert outcome["files"] == ["ov/a.csv", "ov/b.csv"] and outcome["rows_read"] == 600
    outcome = run_json("ov/a.csv", "ov/b.csv", "ov/*.csv", "-o", "o.csv", cwd=tmp_path)
    assert outcome["exit_code"] == 0 and outcome["files"] == ["ov/a.csv", "ov/b.csv"]
    # A directory of nothing readable is still an error.
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x", encoding="utf-8")
    assert "holds no supported files" in str(run_json("none", "-o", "o.csv", cwd=tmp_path)["message"])


def test_a_parquet_file_read_as_csv_is_named_parquet(tmp_path: Path) -> None:
    """A Parquet file named .csv, given --input-format csv, or piped, was said to "look like UTF-16
    text" and told to give --encoding utf-16, which failed the same way."""
    parquet = tmp_path / "events.parquet"
    pl.read_csv(EVENTS, infer_schema=False).write_parquet(parquet)
    named_csv = tmp_path / "events.csv"
    named_csv.write_bytes(parquet.read_bytes())
    for args, stdin in (
        ([named_csv], None),
        ([named_csv, "--encoding", "utf-16"], None),
        ([parquet, "--input-format", "csv"], None),
        (["-"], parquet.read_bytes()),
    ):
        outcome = run_json(*args, "-o", tmp_path / "o.csv", stdin=stdin)
        message = str(outcome["message"])
        assert outcome["exit_code"] == 1 and "is a Parquet file (it starts with PAR1)" in message, message
        assert "--input-format parquet" in message and "UTF-16" not in message
    assert not (tmp_path / "o.csv").exists()
    # Binary data that is no UTF-16 is not said to be.
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x01\x9a\x07\xff\x10\x00" * 20 + b",x\n" + bytes(range(256)))
    message = str(run_json(garbage, "-o", tmp_path / "o.csv")["message"])
    assert "holds NUL bytes" in message and "UTF-16" not in message, message


def _as_another_user() -> list[str] | None:
    """The command that runs Python as uid 65534 with this checkout importable, when this process may
    switch users and that user can run it; else None."""
    if os.geteuid() != 0:
        return []
    setpriv, python = shutil.which("setpriv"), shutil.which("python3", path="/usr/bin:/bin")
    if setpriv is None or python is None:
        return None
    command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python]
    probe = subprocess.run(
        [*command, "-c", f"import sys; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])})"],
        capture_output=True,
        check=False,
    )
    return command if probe.returncode == 0 else None


def as_another_user(check: Callable[[Path, list[str]], None]) -> None:
    """Run ``check`` in a folder the other user may enter, with the command that runs Python as it;
    skipped where no other user can be switched to."""
    command = _as_another_user()
    if command is None:
        pytest.skip("cannot run as another user here (needs setpriv and /usr/bin/python3 of this version)")
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # pytest's own folder is private to root
        check(Path(folder), command)


def another_users_python(folder: Path, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command that runs this checkout's Python as the other user (see :func:`_as_another_user`),
    and its environment, in ``folder``; the test is skipped when that user cannot import it."""
    import sysconfig

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]]),
        "HOME": str(folder),
    }
    python = command or [sys.executable]
    probe = subprocess.run([*python, "-c", "import sessionize"], env=env, check=False)
    if probe.returncode != 0:
        pytest.skip("uid 65534 cannot import this checkout (a private folder above it)")
    return python, env


def test_an_unreadable_input_is_a_permission_error_not_an_unexpected_one() -> None:
    """A file the user cannot read (named, or inside a directory; an incremental run too) was
    "Unexpected error: PermissionError ... Run again with --debug"."""
    as_another_user(check_unreadable_inputs)


def run_as(python: list[str], env: dict[str, str], folder: Path, *args: str) -> tuple[int, str]:
    """``sessionize run ARGS --log-format=json`` through ``python`` in ``folder``: exit code, message."""
    done = subprocess.run(
        [*python, "-m", "sessionize", "run", *args, "--log-format=json"],
        cwd=folder,
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    outcome = json.loads(done.stderr.decode().strip().splitlines()[-1])
    return done.returncode, str(outcome.get("message", ""))


#: Runs ``sessionize run`` once for each argument list of ``sys.argv[1]`` (JSON) in this one process, the
#: CLI as a user invokes it, and prints each run's exit code and message (one Python start for many runs).
_RUNS = """
import json, sys
from typer.testing import CliRunner
from sessionize.cli import app
outcomes = []
for args in json.loads(sys.argv[1]):
    done = CliRunner().invoke(app, ["run", *args, "--log-format=json"])
    outcome = json.loads(done.stderr.strip().splitlines()[-1])
    outcomes.append((done.exit_code, str(outcome.get("message", ""))))
print(json.dumps(outcomes))
"""


def runs_as(
    python: list[str], env: dict[str, str], folder: Path, runs: list[list[str]]
) -> list[tuple[int, str]]:
    """Each of ``runs`` as ``sessionize run ARGS --log-format=json`` through ``python`` in ``folder``, in
    one process: their exit codes and messages."""
    done = subprocess.run(
        [*python, "-c", _RUNS, json.dumps(runs)],
        cwd=folder,
        env=env,
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    return [(code, message) for code, message in json.loads(done.stdout.decode().strip().splitlines()[-1])]


def check_unreadable_inputs(tmp_path: Path, command: list[str]) -> None:
    os.chmod(tmp_path, 0o1777)  # like /tmp: a --state made here is the other user's own
    (tmp_path / "d").mkdir(mode=0o777)
    for path in (tmp_path / "events.csv", tmp_path / "d" / "x.csv"):
        path.write_text(LINES, encoding="utf-8")
        path.chmod(0)
    python, env = another_users_python(tmp_path, command)
    for args in (["events.csv"], ["d"], ["events.csv", "--buckets", "2"], ["events.csv", "--state", "st"]):
        extra = ["--output-dir", "out"] if "--state" in args else ["-o", "o.csv"]
        code, message = run_as(python, env, tmp_path, *args, *extra, "--no-geo")
        assert code == 1, (args, message)
        assert "permission denied" in message and "Unexpected" not in message
        assert ("x.csv" if args == ["d"] else "events.csv") in message
        assert not (tmp_path / "o.csv").exists()
    # An output in a folder the user cannot enter was said not to exist.
    (tmp_path / "ok.csv").write_text(LINES, encoding="utf-8")
    (tmp_path / "ok.csv").chmod(0o644)
    (tmp_path / "private" / "inner").mkdir(parents=True)
    (tmp_path / "private").chmod(0)
    for output in ("private/o.csv", "private/inner/o.csv"):
        code, message = run_as(python, env, tmp_path, "ok.csv", "-o", output, "--no-geo")
        assert code == 1 and f"Cannot write {output}: permission denied" in message.replace("P", "p"), message
        assert "does not exist" not in message
    (tmp_path / "private").chmod(0o700)
    # A GeoIP database the user cannot read was "corrupt or not a MaxMind DB ... Replace the file".
    database = tmp_path / "db.mmdb"
    shutil.copyfile(CITY_DB, database)
    database.chmod(0)
    code, message = run_as(python, env, tmp_path, "ok.csv", "-o", "o.csv", "--geoip-db", "db.mmdb")
    assert code == 1 and "GeoIP database db.mmdb: permission denied" in message, message
    assert "corrupt" not in message


def test_an_input_folder_that_cannot_be_entered_is_a_permission_error() -> None:
    """A folder inside an input directory that the user may not enter was skipped silently (its files
    left out, exit 0); named, it "holds no supported files", and a file in it was "no such file"
    (review 57 F2: glob and os.path.exists swallow EACCES)."""
    as_another_user(check_unenterable_folders)


def check_unenterable_folders(tmp_path: Path, command: list[str]) -> None:
    os.chmod(tmp_path, 0o1777)  # like /tmp: a --state made here is the other user's own
    (tmp_path / "in" / "closed").mkdir(parents=True)
    (tmp_path / "in" / "ok.csv").write_text(LINES, encoding="utf-8")
    (tmp_path / "in" / "closed" / "c.csv").write_text(LINES.replace("\nu", "\nw"), encoding="utf-8")
    (tmp_path / "in" / "_temporary").mkdir()  # hidden: its files are skipped anyway, so no error
    for path in (tmp_path / "in", tmp_path / "in" / "ok.csv", tmp_path / "in" / "closed" / "c.csv"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    python, env = another_users_python(tmp_path, command)

    def run(*args: str) -> tuple[int, str]:
        return run_as(python, env, tmp_path, *args, "-o", "o.csv", "--no-geo")

    code, message = run("in")  # all readable: the folder is read
    assert code == 0, message
    (tmp_path / "o.csv").unlink()
    try:
        (tmp_path / "in" / "closed").chmod(0)
        (tmp_path / "in" / "_temporary").chmod(0)
        for args in (["in"], ["in/closed"], ["in/closed/c.csv"], ["in/closed/*.csv"], ["in/ok.csv", "in"]):
            code, message = run(*args)
            named = "in/closed/c.csv" if args == ["in/closed/c.csv"] else "in/closed"
            assert code == 1 and f"{named}: permission denied" in message, (args, code, message)
            assert "no such file" not in message and "no supported files" not in message, message
            assert not (tmp_path / "o.csv").exists(), args
        (tmp_path / "in" / "closed").chmod(0o755)
        code, message = run("in")  # the hidden folder that cannot be entered stays skipped
        assert code == 0, message
    finally:
        (tmp_path / "in" / "closed").chmod(0o700)
        (tmp_path / "in" / "_temporary").chmod(0o700)


HAS_SPARK = importlib.util.find_spec("pyspark") is not None
#: Every engine path that resolves inputs, as the options of a run (its output included): each must
#: refuse the same folders. Dask and Spark resolve local inputs before a cluster or Java starts.
ENGINE_ARGS = {
    "memory": ["-o", "o.csv"],
    "buckets": ["-o", "o.csv", "--buckets", "2"],
    "incremental": ["--state", "st", "--output-dir", "out"],
    **({"dask": ["-o", "o", "--engine", "dask"]} if HAS_DASK else {}),
    **({"spark": ["-o", "o", "--engine", "spark"]} if HAS_SPARK else {}),
}


def test_a_pattern_leaves_out_no_folder_it_cannot_enter() -> None:
    """``in/**/*.csv`` and ``in/*/c.csv`` skipped a folder below them that the user may not enter (or may
    list but not enter): its files were left out of the run, exit 0; only a pattern that matched nothing
    was checked (review 57 F2). A directory input dropped the files of a folder it could list but not
    enter as silently, and named alone such a folder "holds no supported files". Each is a permission
    error naming the folder, on every engine path and for a ``file://`` URL (Dask's listing skipped it
    too). A folder whose files would be skipped anyway is no error: a hidden one below a directory, and
    one starting with ``.`` below a pattern, whose ``*`` and ``**`` do not match such names (as glob)."""
    as_another_user(check_patterns)


def check_patterns(tmp_path: Path, command: list[str]) -> None:
    os.chmod(tmp_path, 0o1777)  # like /tmp: a --state made here is the other user's own
    for relative in ("ok.csv", "a/c.csv", "closed/c.csv", "listed/c.csv", "_closed/c.csv", ".closed/c.csv"):
        path = tmp_path / "in" / relative
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(LINES.replace("\nu", f"\n{relative[0]}"), encoding="utf-8")
        path.chmod(0o644)
        path.parent.chmod(0o755)
    python, env = another_users_python(tmp_path, command)
    url = (tmp_path / "in").as_uri()
    memory = ENGINE_ARGS["memory"]
    #: The folder made unreachable (and how), what is then refused (naming it) and what is read.
    cases = [
        ("closed", 0, ["in/**/*.csv", "in/*/c.csv", "in/**/c.csv", "in/c*/*.csv"], []),
        ("listed", 0o444, ["in/**/*.csv", "in/*/c.csv", "in", "in/listed"], []),
        ("_closed", 0, ["in/**/*.csv", "in/*/c.csv"], ["in"]),
        (".closed", 0, ["in/.*/c.csv", "in/.closed/*.csv"], ["in", "in/**/*.csv", "in/*/c.csv"]),
    ]
    try:
        for folder, mode, refused, read in cases:
            (tmp_path / "in" / folder).chmod(mode)
            outcomes = runs_as(
                python, env, tmp_path, [[args, *memory, "--no-geo"] for args in refused + read]
            )
            for args, (code, message) in zip(refused + read, outcomes, strict=True):
                if args in read:
                    assert code == 0, (folder, args, message)
                    continue
                assert code == 1 and f"in/{folder}: permission denied" in message, (folder, args, message)
                assert "no such file" not in message and "no supported files" not in message, message
            (tmp_path / "in" / folder).chmod(0o755)
            (tmp_path / "o.csv").unlink(missing_ok=True)
        # Every engine path refuses the same folder, and writes nothing; Dask's file:// URLs too.
        (tmp_path / "in" / "closed").chmod(0)
        runs = [["in/**/*.csv", *options] for options in ENGINE_ARGS.values()]
        if HAS_DASK:
            runs += [[source, *ENGINE_ARGS["dask"]] for source in (url, f"{url}/**/*.csv", f"{url}/*/c.csv")]
        for run, (code, message) in zip(runs, runs_as(python, env, tmp_path, runs), strict=True):
            assert code == 1 and "in/closed: permission denied" in message, (run, message)
        assert not any((tmp_path / name).exists() for name in ("o.csv", "o", "out")), list(tmp_path.iterdir())
    finally:
        for folder in ("closed", "listed", "_closed", ".closed"):
            (tmp_path / "in" / folder).chmod(0o755)


def test_permission_errors_have_one_wording(tmp_path: Path) -> None:
    """Finding the inputs, reading them, and the command line's catch-all (a state or an output's folder)
    said "permission denied" in three wordings with three pieces of advice; they share one."""
    from sessionize.console import Reporter
    from sessionize.errors import permission_denied
    from sessionize.io.inputs import InputFile
    from sessionize.io.read import _describe_read_error

    advice = permission_denied("x")
    assert advice.startswith("x: permission denied") and "run as a user" in advice
    denied = PermissionError(13, "Permission denied", "st/state.json")
    source = InputFile("d/x.csv", "csv")
    assert _describe_read_error("d/x.csv", source, denied) == permission_denied("d/x.csv")
    with pytest.raises(typer.Exit) as exits, contextlib.redirect_stderr(io.StringIO()) as stderr:
        Reporter(json=True).fail(denied)
    assert exits.value.exit_code == 1
    assert json.loads(stderr.getvalue())["message"] == permission_denied("st/state.json")


@pytest.mark.parametrize("zone", ["localtime", "posix/Europe/Berlin", "right/UTC"])
def test_time_zone_names_polars_cannot_take_are_usage_errors(tmp_path: Path, zone: str) -> None:
    """Python's zoneinfo takes these names and Polars does not: the run failed in the middle with
    "Unexpected error: ComputeError" (exit 1); they are refused before anything is read (exit 2)."""
    for option in ("--timezone", "--input-timezone"):
        result = CliRunner().invoke(
            app,
            [
                "run",
                str(EVENTS),
                "--no-geo",
                option,
                zone,
                "-o",
                str(tmp_path / "o.csv"),
                "--log-format",
                "text",
            ],
        )
        assert result.exit_code == 2, result.output
        assert f"{option} '{zone}' is not a known time zone" in words(result.stderr)
    assert not (tmp_path / "o.csv").exists()
    assert sessionize.run([EVENTS], no_geo=True, timezone="Europe/Berlin").sessions.height > 0
