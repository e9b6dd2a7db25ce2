"""Paths with glob characters (``[``, ``]``, ``*``, ``?``) are paths, never patterns.

Polars expands globs in the paths its scanners are given unless told not to, so a Parquet input named
``events[1].parquet`` read as "no file found", and so would a state directory, an output directory
or a temporary directory whose name holds brackets. Every reader and engine is run here from a
directory named with brackets and a star, on files whose names hold them too.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize.io import resolve_inputs
from tests.helpers import KEYS

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "logs [2024] *?"
    directory.mkdir()
    return directory


def _expected() -> pl.DataFrame:
    return sessionize.run([SAMPLE / "events.csv"], no_geo=True).sessions.sort(KEYS)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_an_input_named_with_brackets_is_read(odd_dir: Path, suffix: str) -> None:
    source = odd_dir / f"events[1].{suffix}"
    shutil.copy(SAMPLE / f"events.{suffix}", source)
    result = sessionize.run([source], no_geo=True, output=str(odd_dir / "sessions[1].parquet"))
    assert result.files == [str(source)]
    written = pl.read_parquet(odd_dir / "sessions[1].parquet", glob=False)
    assert_frame_equal(written.sort(KEYS), _expected(), check_column_order=False)


def test_buckets_and_the_report_in_a_temp_dir_with_brackets(odd_dir: Path) -> None:
    source = odd_dir / "events[1].parquet"
    shutil.copy(SAMPLE / "events.parquet", source)
    temp = odd_dir / "tmp[0]"
    temp.mkdir()
    result = sessionize.run(
        [source],
        no_geo=True,
        buckets=3,
        temp_dir=str(temp),
        output=str(odd_dir / "sessions.parquet"),
        report=str(odd_dir / "report[1].html"),
    )
    assert result.buckets == 3
    written = pl.read_parquet(odd_dir / "sessions.parquet", glob=False)
    assert_frame_equal(written.sort(KEYS), _expected(), check_column_order=False)
    assert (odd_dir / "report[1].html").stat().st_size > 0


def test_incremental_state_and_output_with_brackets(odd_dir: Path) -> None:
    source = odd_dir / "events[1].csv"
    shutil.copy(SAMPLE / "events.csv", source)
    state = odd_dir / "state[1]"
    out = odd_dir / "out[1]"
    for _ in range(2):  # the second run reads the first one's state and partitions back
        sessionize.run([source], no_geo=True, state=str(state), output_dir=str(out), reprocess=True)
    files = sorted(out.rglob("*.parquet"))
    written = pl.read_parquet(files, glob=False).drop("is_final", "session_date", strict=False)
    assert_frame_equal(written.sort(KEYS), _expected(), check_column_order=False)


def test_the_report_reads_a_table_named_with_brackets(odd_dir: Path) -> None:
    table = odd_dir / "sessions[1].parquet"
    sessionize.run([SAMPLE / "events.csv"], no_geo=True, output=str(table))
    html = odd_dir / "report.html"
    sessionize.make_report([table], output=str(html))
    assert html.stat().st_size > 0


def test_dask_reads_and_writes_paths_with_brackets(odd_dir: Path) -> None:
    pytest.importorskip("distributed")
    source = odd_dir / "events[1].parquet"
    shutil.copy(SAMPLE / "events.parquet", source)
    result = sessionize.run(
        [source],
        no_geo=True,
        engine="dask",
        partitions=2,
        output=str(odd_dir / "sessions[1]"),
        report=str(odd_dir / "report[1].html"),
    )
    assert result.session_count == _expected().height
    written = pl.read_parquet(sorted((odd_dir / "sessions[1]").glob("*.parquet")), glob=False)
    assert_frame_equal(written.sort(KEYS), _expected(), check_column_order=False)


#: The Polars readers that expand glob patterns in the paths they are given unless told not to.
GLOBBING_READERS = {"scan_parquet", "read_parquet", "scan_csv", "read_csv"}


def test_every_polars_reader_in_the_package_is_told_not_to_glob() -> None:
    """A reader added later without ``glob=False`` would bring the bug back: each call site says it."""
    package = Path(sessionize.__file__).resolve().parent
    missing = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in GLOBBING_READERS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "pl"
                and not any(
                    k.arg == "glob" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.keywords
                )
            ):
                missing.append(f"{source.relative_to(package)}:{node.lineno} pl.{node.func.attr}")
    assert missing == []


def hidden_layout(directory: Path) -> Path:
    """One event a file, each file its own user: only ``a`` is not hidden."""
    for relative, user in [("a.csv", "a"), ("_d.csv", "d"), ("_under/c.csv", "c"), (".hid/b.csv", "b"),
                           ("sub/e.csv", "e"), ("sub/.f.csv", "f")]:  # fmt: skip
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"user_id,timestamp\n{user},2024-05-01T10:00:00Z\n", encoding="utf-8")
    (directory / "_SUCCESS").write_text("", encoding="utf-8")
    return directory


def test_a_directory_skips_hidden_names_on_every_path(tmp_path: Path) -> None:
    """A name starting with ``.`` or ``_`` (a job's ``_temporary/`` parts, ``_SUCCESS``, hidden files) is
    skipped below a directory, as Spark and Hadoop skip them: the local path, a ``file://`` URL (Dask)
    and a pattern read the same files, and the skipped ones are named in a warning."""
    directory = hidden_layout(tmp_path / "logs")
    with pytest.warns(sessionize.SessionizeWarning, match="4 file"):
        local = sessionize.run([directory], no_geo=True)
    assert sorted(local.sessions["user_id"].to_list()) == ["a", "e"]
    with pytest.warns(sessionize.SessionizeWarning, match="4 file"):
        url = resolve_inputs([directory.as_uri()], urls=True)
    assert sorted(Path(f.path.removeprefix("file://")).name for f in url) == ["a.csv", "e.csv"]
    with pytest.warns(sessionize.SessionizeWarning, match="1 file"):
        pattern = resolve_inputs([str(directory / "*.csv")])
    assert [Path(f.path).name for f in pattern] == ["a.csv"]
    # A hidden file named explicitly is read.
    named = sessionize.run([directory / "_d.csv"], no_geo=True)
    assert named.sessions["user_id"].to_list() == ["d"]


def glob_layout(directory: Path) -> Path:
    """Folders at several depths, hidden ones (``.`` and ``_``), and a link to a folder and to a file."""
    for relative in ["a.csv", "b.txt", "2024-05/x.csv", "2024-05/day1/y.csv", "2024-06/x.csv",
                     "2024-06/.z.csv", "_tmp/x.csv", ".cache/x.csv", ".cache/deep/x.csv", "deep/er/est/x.csv",
                     "deep/_p/x.csv", "sub.csv/inner.csv", "[x]/x.csv"]:  # fmt: skip
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\n", encoding="utf-8")
    (directory / "empty").mkdir()
    (directory / "linked").symlink_to(directory / "deep" / "er")
    (directory / "link.csv").symlink_to(directory / "a.csv")
    return directory


@pytest.mark.parametrize(
    "pattern",
    ["**/*.csv", "*/x.csv", "**", "*", "*/*", "**/x.csv", "2024-*/**/*.csv", "**/er/**/*.csv", ".*/x.csv",
     ".*/**/*.csv", "*/.*.csv", "_*/*", "**/_*/*.csv", "2024-0[56]/x.csv", "deep/*/est/x.csv", "*/*/*/*.csv",
     "no*/x.csv", "*.csv/*.csv", "[[]x]/*.csv", "*/", "**/"],
)  # fmt: skip
def test_a_pattern_reads_the_files_glob_matches(
    tmp_path: Path, pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pattern expander lists folders itself (to refuse one it cannot enter), and matches as glob does:
    ``*`` and ``**`` never match a name starting with ``.``, a part of the pattern that starts with one
    does, links are followed; a matched file whose name starts with ``.`` or ``_`` is then skipped."""
    import glob
    import os
    import warnings

    directory = glob_layout(tmp_path / "logs")
    for root in (str(directory) + os.sep, ""):  # an absolute pattern, and one relative to the folder
        monkeypatch.chdir(directory)
        expected = sorted(
            m
            for m in glob.glob(root + pattern, recursive=True)
            if os.path.isfile(m) and not Path(m).name.startswith((".", "_")) and not m.endswith(".txt")
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                found = [f.path for f in resolve_inputs([root + pattern])]
            except sessionize.errors.NoInputFilesError:
                found = []
        # One file reached through two links is read once; glob lists each path.
        assert sorted({os.path.realpath(m) for m in found}) == sorted({os.path.realpath(m) for m in expected})
        assert set(found) <= set(expected)


def test_a_file_url_pattern_reads_what_the_local_pattern_reads(tmp_path: Path) -> None:
    """A ``file://`` URL (``--engine dask``) was listed by fsspec, whose ``*`` and ``**`` match names
    starting with ``.``: ``logs/**/*.csv`` as a URL read ``.cache/x.csv``, as a path not."""
    import warnings

    directory = glob_layout(tmp_path / "logs")
    for pattern in ("**/*.csv", "*/x.csv", ""):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            local = [f.path for f in resolve_inputs([str(directory / pattern)])]
            url = [f.path for f in resolve_inputs([f"{directory.as_uri()}/{pattern}"], urls=True)]
        assert [Path(name.removeprefix("file://")) for name in url] == [Path(name) for name in local], pattern
