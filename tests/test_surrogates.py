"""Lone UTF-16 surrogate escapes in JSON (``\\ud800`` without its pair): read as U+FFFD on every path.

JavaScript's ``JSON.stringify`` writes a lone half of a surrogate pair as an escape (a title cut inside
an emoji), so browser trackers send them. Polars read a lone high half as NUL and failed the whole file
on a lone low one: one event stopped the run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize.io.jsontext import _well_formed_texts
from sessionize.io.read import prescan_ndjson
from sessionize.io.surrogates import (
    _ESCAPED_BACKSLASH,
    LoneSurrogateScan,
    _holds_lone,
    _lone_positions,
    well_formed_surrogates,
)
from tests.helpers import EVERY_PATH, KEYS, path_options, path_sessions

REPLACEMENT = "\ufffd"


def replaced(text: str) -> str:
    """A Python string (lone surrogates kept, as ``json.loads`` keeps them) with each lone one U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


@pytest.mark.parametrize(
    ("escaped", "expected"),
    [
        (r"a\ud800b", f"a{REPLACEMENT}b"),
        (r"a\udc00b", f"a{REPLACEMENT}b"),
        (r"\uD83D\uDE00", "\U0001f600"),
        (r"\ud83d\ude00\ude00", f"\U0001f600{REPLACEMENT}"),
        (r"\ude00\ud83d", REPLACEMENT * 2),
        (r"\ud800\ud800\udc00", f"{REPLACEMENT}\U00010000"),
        (r"\\ud800", r"\ud800"),  # an escaped backslash, then text
        (r"\\\ud800", "\\" + REPLACEMENT),
        (r"\ud800\\udc00", REPLACEMENT + r"\udc00"),
        (r"x\ud800", f"x{REPLACEMENT}"),
        (r"\u00e9\ud7ff\ue000", "\u00e9\ud7ff\ue000"),
    ],
)
def test_each_lone_half_is_the_replacement_character(escaped: str, expected: str) -> None:
    line = ('{"a": "' + escaped + '"}').encode()
    fixed = well_formed_surrogates(line)
    assert len(fixed) == len(line)  # offsets and line numbers stay
    assert json.loads(fixed)["a"] == expected == replaced(json.loads(line)["a"])
    assert pl.read_ndjson(fixed)["a"].to_list() == [expected]


def test_random_strings_read_as_python_reads_them_with_lone_halves_replaced() -> None:
    rng = random.Random(5)
    pieces = [
        r"\ud800",
        r"\udbff",
        r"\udc00",
        r"\uDFFF",
        r"\ud83d\ude00",
        "\\\\",
        "a",
        "\u00e9",
        r"\u0041",
        "u",
    ]
    lines = []
    for _ in range(2_000):
        lines.append('{"a": "' + "".join(rng.choices(pieces, k=rng.randint(1, 8))) + '"}')
    data = "\n".join(lines).encode()
    fixed = well_formed_surrogates(data)
    for before, after in zip(data.split(b"\n"), fixed.split(b"\n"), strict=True):
        assert json.loads(after)["a"] == replaced(json.loads(before)["a"])
    # The block-by-block test finds a lone half wherever the blocks are cut.
    lone_lines = [line for line in data.split(b"\n") if well_formed_surrogates(line) != line]
    sample = b"\n".join([b'{"a": "ok"}'] * 3 + lone_lines[:1] + [b'{"a": "\\ud83d\\ude00"}'])
    for cut in range(1, len(sample)):
        for later in (cut + 1, cut + 7, len(sample)):
            scan = LoneSurrogateScan()
            for block in (sample[:cut], sample[cut:later], sample[later:]):
                if block:
                    scan.feed(block)
            assert scan.close()
    pairs = b'{"a": "\\ud83d\\ude00"}\n' * 3
    for cut in range(1, len(pairs)):
        scan = LoneSurrogateScan()
        scan.feed(pairs[:cut])
        scan.feed(pairs[cut:])
        assert not scan.close()


def test_the_quick_decision_is_the_exact_one_on_random_mixes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where no two backslashes come before a surrogate's ``u``, a search with lookarounds (bytes) or
    # with the pairs taken out (the Polars text column) decides; it must say what the exact loop says,
    # runs of two and three backslashes, a high half before an escaped backslash and line ends included.
    rng = random.Random(57)
    pieces = [
        r"\ud800",
        r"\udbff",
        r"\udc00",
        r"\uDFFF",
        r"\uD83D\ude00",
        r"\udbff\uDC00",
        "\\",
        "\\\\",
        "\\",
        "u",
        "a",
        "d800",
        "dc00",
        "\n",
        r"\u00e9",
    ]
    weights = [1, 1, 1, 1, 4, 4, 2, 1, 1, 2, 3, 2, 2, 1, 2]
    texts = ["".join(rng.choices(pieces, weights, k=rng.randint(1, 10))) for _ in range(20_000)]
    decided: dict[tuple[bool, bool], int] = {}
    for text in texts:
        data = text.encode()
        exact = bool(_lone_positions(data))
        assert _holds_lone(data) is exact, text
        if data.count(b"\n"):
            end = data.index(b"\n") + 1
            assert _holds_lone(data, end) is bool(_lone_positions(data, end)), text
        fallback = bool(_ESCAPED_BACKSLASH.search(data))
        decided[exact, fallback] = decided.get((exact, fallback), 0) + 1
    assert len(decided) == 4 and min(decided.values()) > 500  # each way, with a lone half and without
    # The text column: the values mended one by one are those with a lone half, and those with two
    # backslashes before a surrogate's ``u`` (the exact mender decides); pairs alone are left alone.
    sent: list[str] = []

    def mender(data: bytes) -> bytes:
        sent.append(data.decode())
        return well_formed_surrogates(data)

    monkeypatch.setattr("sessionize.io.jsontext.well_formed_surrogates", mender)
    mended = _well_formed_texts(pl.Series([*texts, None], dtype=pl.String)).to_list()
    assert mended[-1] is None
    looked_at = set(sent)
    for text, after in zip(texts, mended[:-1], strict=True):
        lone = _lone_positions(text.encode())
        expected = bytearray(text.encode())
        for at in lone:
            expected[at : at + 6] = b"\\ufffd"
        assert after == expected.decode(), text
        if lone:
            assert text in looked_at
        elif text in looked_at:
            assert _ESCAPED_BACKSLASH.search(text.encode()), text
    pairs = pl.Series([r"caf\ud83d\ude00 \\x \\u0041"] * 3)
    sent.clear()
    assert _well_formed_texts(pairs).to_list() == pairs.to_list()
    assert not sent


def test_a_long_line_over_many_blocks_is_scanned_in_linear_time() -> None:
    scan = LoneSurrogateScan()
    for _ in range(2_000):
        scan.feed(b"x" * 65_536)  # one line of 128 MiB, never ended: each block only appended
    scan.feed(b'\\ud800"}\n')
    assert scan.close()


def lines_with_lone_halves() -> list[str]:
    """Events whose ids, URLs and titles hold lone halves, pairs and escaped backslashes."""
    rows = [
        ("u1", "10:00", r"https://a.example/\udc00x", r"\ud83d\ude00 \\ud800"),
        ("u1", "10:05", "https://a.example/two", r"cut \ud83d"),
        (r"u\ud800", "10:01", r"https://a.example/b\uD800\uD800", "t"),
        ("u3", "10:02", "https://a.example/c", r"\ude00"),
    ]
    return [
        f'{{"user_id": "{user}", "timestamp": "2024-05-01T{at}:00Z", "event": "page_view", '
        f'"url": "{url}", "title": "{title}"}}'
        for user, at, url, title in rows
    ]


@pytest.mark.filterwarnings("ignore:--memory-limit:sessionize.SessionizeWarning")
@pytest.mark.filterwarnings("ignore:One bucket:sessionize.SessionizeWarning")
@pytest.mark.parametrize(
    "path", [*EVERY_PATH, pytest.param({"buckets": 3, "memory_limit": "8K"}, id="memory-limit")]
)
def test_lone_halves_are_read_on_every_path(tmp_path: Path, path: dict[str, Any]) -> None:
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(lines_with_lone_halves()) + "\n", encoding="ascii")
    assert prescan_ndjson(str(source)) == (False, True)
    options = path_options(path, tmp_path)
    result = sessionize.run([source], no_geo=True, **options)
    table = path_sessions(result, options).sort(KEYS)
    assert result.rows_read == 4 and result.rejected == 0
    assert table["user_id"].to_list() == ["u1", "u3", f"u{REPLACEMENT}"]
    assert table["landing_page"].to_list() == [
        f"https://a.example/{REPLACEMENT}x",
        "https://a.example/c",
        f"https://a.example/b{REPLACEMENT}{REPLACEMENT}",
    ]
    assert not any("\0" in str(value) for row in table.rows() for value in row)
    local = sessionize.run([source], no_geo=True)
    assert_frame_equal(table.select(local.sessions.columns), local.sessions.sort(KEYS), check_dtypes=False)


@pytest.mark.parametrize(
    "options", [{}, {"buckets": 3, "memory_limit": "8K"}], ids=["memory", "memory-limit"]
)
def test_lone_halves_in_a_file_read_line_by_line(tmp_path: Path, options: dict[str, Any]) -> None:
    """A malformed line sends the file to the careful reader, which replaces them too; the rejected
    line is shown as it was written."""
    lines = lines_with_lone_halves()
    bad = '{"user_id": "u9", "timestamp": "2024-05-01T10:09:00Z", "url": "\\ud800'
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join([*lines, bad]) + "\n", encoding="ascii")
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [source], no_geo=True, on_invalid="skip", rejects=str(rejects), temp_dir=str(tmp_path), **options
    )
    assert result.rejected == 1
    assert pl.read_csv(rejects, infer_schema=False)["raw_line"].to_list() == [bad]
    users = sorted(result.sessions["user_id"].to_list())
    assert users == ["u1", "u3", f"u{REPLACEMENT}"]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_lone_halves_in_json_text_properties(tmp_path: Path, path: dict[str, Any]) -> None:
    """PostHog's CSV export keeps ``properties`` as JSON text: a lone half in it made the whole object
    unreadable (the event lost its page, referrer and session id, without a word)."""
    import csv

    source = tmp_path / "events.csv"
    with source.open("w", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "event", "distinct_id", "timestamp", "properties"])
        for number, (title, url) in enumerate(
            [
                (r"cut \ud83d", "https://a.example/one"),
                ("ok", r"https://a.example/t\udc00o"),
                ("", "https://a.example/3"),
            ]
        ):
            properties = (
                '{"$current_url": "' + url + '", "$title": "' + title + '", "$session_id": "s1", '
                '"$referrer": "https://www.google.com/"}'
            )
            writer.writerow([f"e{number}", "$pageview", "d1", f"2024-05-01T10:0{number}:00Z", properties])
    options = path_options(path, tmp_path)
    result = sessionize.run([source], preset="posthog", no_geo=True, **options)
    table = path_sessions(result, options)
    assert table.select("session_id", "landing_page", "exit_page", "pageview_count").rows() == [
        ("s1", "https://a.example/one", "https://a.example/3", 3)
    ]
