"""CSV files in another ``--encoding`` than UTF-8 with rows that do not parse or do not decode: the text
is decoded once, whatever reader then reads it. The careful reader (the one a malformed row sends a file
to) once decoded a latin-1 file's already decoded text a second time (``/café`` became ``/cafÃ©``, exit
0), and split a UTF-16 file at the byte 0x0A, so that its header was lost or one undecodable row made
thirteen rows of six."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import MalformedRowsError
from tests.helpers import EVERY_PATH_AND_SPARK, any_path_options, path_sessions

HEADER = "user_id,timestamp,url\n"
GOOD = [
    "a,2024-01-01T00:00:00Z,https://s.example/café\n",
    "a,2024-01-01T00:01:00Z,https://s.example/crème\n",
    "b,2024-01-01T00:02:00Z,https://s.example/über\n",
    "b,2024-01-01T00:03:00Z,https://s.example/naïve\n",
    "c,2024-01-01T00:04:00Z,https://s.example/señor\n",
]
#: A row of four fields where the header has three: malformed, on line 4.
RAGGED = "c,2024-01-01T00:05:00Z,https://s.example/x,extra\n"
LANDINGS = ["https://s.example/café", "https://s.example/über", "https://s.example/señor"]


def _run(path: Path, encoding: str, tmp_path: Path, request: pytest.FixtureRequest, option: Any) -> Any:
    options = any_path_options(option, tmp_path, request)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [path], encoding=encoding, on_invalid="skip", no_geo=True, rejects=str(rejects), **options
    )
    sessions = path_sessions(result, options).sort("user_id")
    return result, sessions, pl.read_csv(rejects, infer_schema=False)


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_malformed_row_in_another_encoding(
    path: dict[str, Any], encoding: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = tmp_path / "events.csv"
    source.write_bytes("".join([HEADER, *GOOD[:2], RAGGED, *GOOD[2:]]).encode(encoding))
    result, sessions, rejects = _run(source, encoding, tmp_path, request, path)
    assert sessions["landing_page"].to_list() == LANDINGS
    assert sessions["exit_page"].to_list()[:2] == ["https://s.example/crème", "https://s.example/naïve"]
    assert (result.rows_read, result.events_read, result.rejected) == (6, 5, 1)
    assert rejects.select("source_row", "reject_reason").rows() == [
        ("4", "wrong_field_count (4, expected 3)")
    ]


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
def test_an_undecodable_row_in_utf16(
    path: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A lone low surrogate (``00 DC`` in UTF-16-LE) does not decode: that row, and only it, is rejected
    on its own line; the rows after it keep theirs."""
    before, after = "".join([HEADER, *GOOD[:3]]), "".join(GOOD[3:])
    bad = (
        "c,2024-01-01T00:05:00Z,https://s.example/".encode("utf-16-le")
        + b"\x00\xdc"
        + "\n".encode("utf-16-le")
    )
    source = tmp_path / "events.csv"
    source.write_bytes(before.encode("utf-16-le") + bad + after.encode("utf-16-le"))
    result, sessions, rejects = _run(source, "utf-16-le", tmp_path, request, path)
    assert sessions["landing_page"].to_list() == LANDINGS
    assert (result.rows_read, result.events_read, result.rejected) == (6, 5, 1)
    assert rejects.select("source_row", "reject_reason").rows() == [("5", "undecodable_bytes")]


def test_an_undecodable_header_byte_is_read_as_a_utf8_files_is(tmp_path: Path) -> None:
    """cp1252 has no byte 0x81. In a column the run does not use, the header reads with U+FFFD there, as
    in a UTF-8 file, and no row is lost."""
    source = tmp_path / "events.csv"
    source.write_bytes(
        b"user_id,timestamp,url,note\x81\n"
        + "".join(line.replace("\n", ",x\n") for line in GOOD).encode("cp1252")
    )
    result = sessionize.run([source], encoding="cp1252", no_geo=True)
    assert result.sessions.sort("user_id")["landing_page"].to_list() == LANDINGS
    assert (result.rows_read, result.rejected) == (5, 0)


@pytest.mark.parametrize(
    ("data", "encoding", "figures"),
    [
        pytest.param(b"", "utf-16", (0, 0, 0), id="empty"),
        pytest.param(HEADER.encode("utf-16"), "utf-16", (0, 0, 0), id="header-only"),
        pytest.param(
            HEADER.encode("utf-16-le")
            + "a,2024-01-01T00:00:00Z,/x".encode("utf-16-le")
            + b"\x00\xdc"
            + "\n".encode("utf-16-le"),
            "utf-16-le",
            (1, 0, 1),
            id="only-an-undecodable-row",
        ),
    ],
)
def test_a_file_in_another_encoding_with_no_readable_row(
    data: bytes, encoding: str, figures: tuple[int, int, int], tmp_path: Path
) -> None:
    """An empty file, a header alone, or one row that does not decode: no events, every row counted, and
    the undecodable row an error naming its line unless skipped."""
    source = tmp_path / "events.csv"
    source.write_bytes(data)
    result = sessionize.run([source], encoding=encoding, on_invalid="skip", no_geo=True)
    assert (result.rows_read, result.events_read, result.rejected) == figures
    assert result.sessions.height == 0
    if figures[2]:
        with pytest.raises(MalformedRowsError, match="line 2: undecodable_bytes"):
            sessionize.run([source], encoding=encoding, no_geo=True)


@pytest.mark.parametrize("buckets", [None, 2])
def test_ndjson_in_another_encoding_is_told_to_be_converted_not_given_encoding(
    tmp_path: Path, buckets: int | None
) -> None:
    """A stop-56 review: NDJSON is read as UTF-8 whatever --encoding says (JSON lines are UTF-8), yet a
    Latin-1 line's error told the user to give --encoding, and a UTF-16 file was two malformed lines of a
    one-line file. The error now says what to do: convert the file."""
    line = '{"user_id": "u1", "timestamp": "2024-05-01T10:00:00Z", "url": "/caf\u00e9"}\n'
    utf16 = tmp_path / "events16.ndjson"
    utf16.write_bytes(line.encode("utf-16"))
    with pytest.raises(sessionize.UnreadableInputError, match="looks like UTF-16") as error:
        sessionize.run([utf16], no_geo=True, encoding="utf-16", buckets=buckets)
    assert "iconv -f UTF-16 -t UTF-8" in str(error.value) and "--encoding utf-16" not in str(error.value)
    latin = tmp_path / "events1.ndjson"
    latin.write_bytes(line.encode("latin-1"))
    with pytest.raises(MalformedRowsError, match="line 1") as malformed:
        sessionize.run([latin], no_geo=True, encoding="latin-1", buckets=buckets)
    assert "iconv -f LATIN1 -t UTF-8" in str(malformed.value)
    assert "give its encoding with --encoding" not in str(malformed.value)
