"""NDJSON objects too wide to flatten into a column per leaf (review 52, findings 3 and 4).

Flattening typed each leaf through its whole object (time growing with the square of its leaves: one
event with 8,000 keys 13 levels deep took 91 s, 50,000 never ended), and Polars' reader built every key
any event has for every event (8,000 PostHog events each with a feature flag of its own: 32 s and 6 GB).
A top-level object of more than :data:`~sessionize.io.read.OBJECT_LEAVES_LIMIT` leaves is now read with
the leaves a run can use alone (Polars' reader skips the others): the sessions are those of the same
events without the extra keys, on every path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize.errors import MissingColumnError
from sessionize.io.read import OBJECT_LEAVES_LIMIT
from tests.helpers import EVERY_PATH, KEYS, path_options, path_sessions

SITE = "https://shop.example"
START = datetime(2024, 5, 1, 9, tzinfo=UTC)
#: More keys than an object may have and be flattened: one event in every few has one of its own.
EXTRA_KEYS = OBJECT_LEAVES_LIMIT + 100


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def segment_events(*, wide: bool) -> list[dict[str, Any]]:
    """Segment's shape, read by the built-in column names (``context_page_url``, ``context_ip``...):
    three users, visits split by gaps of an hour, referrers, addresses of the MaxMind test database. With
    ``wide``, each event's ``context.traits`` also has a key of its own, :data:`EXTRA_KEYS` in all."""
    events = []
    for n in range(EXTRA_KEYS):
        user = n % 3
        at = START + timedelta(minutes=(n // 3) * 7 + (60 if n % 40 >= 20 else 0))
        context: dict[str, Any] = {
            "page": {"url": f"{SITE}/p{n % 7}", "referrer": "https://www.google.com/" if n % 11 == 0 else ""},
            "ip": f"81.2.69.{160 + user}",
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36",
            "traits": {"plan": "pro"},
        }
        if wide:
            context["traits"][f"flag_{n}"] = True
        events.append(
            {"messageId": f"m{n}", "anonymousId": f"user-{user}", "timestamp": _time(at), "context": context}
        )
    return events


def posthog_events(*, wide: bool) -> list[dict[str, Any]]:
    """PostHog's NDJSON export (read with ``--preset posthog``); with ``wide``, feature flags
    (``$feature/...``) of one event each, :data:`EXTRA_KEYS` in all."""
    events = []
    for n in range(EXTRA_KEYS):
        user = n % 4
        at = START + timedelta(minutes=(n // 4) * 9 + (45 if n % 30 >= 15 else 0))
        properties: dict[str, Any] = {
            "$current_url": f"{SITE}/q{n % 5}?utm_source=news" if n % 13 == 0 else f"{SITE}/q{n % 5}",
            "$referrer": "https://duckduckgo.com/" if n % 17 == 0 else "$direct",
            "$session_id": f"s{user}-{n // 60}",
            "$ip": f"81.2.69.{142 + user}",
            "distinct_id": f"d{user}",
        }
        if wide:
            properties[f"$feature/flag-{n}"] = "on"
        events.append(
            {
                "uuid": f"u{n}",
                "event": "$pageview",
                "distinct_id": f"d{user}",
                "timestamp": _time(at),
                "properties": properties,
            }
        )
    return events


def write_lines(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return path


SHAPES: dict[str, tuple[Callable[..., list[dict[str, Any]]], dict[str, Any]]] = {
    "segment": (segment_events, {}),
    "posthog": (posthog_events, {"preset": "posthog"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_wide_object_gives_the_sessions_of_the_events_without_its_extra_keys(
    shape: str, path: dict[str, Any], tmp_path: Path
) -> None:
    """Read as JSON text, the object still gives every column the run reads (the built-in names, a
    preset's), on every path: the sessions are those of the same events whose object is narrow enough to
    flatten, read in memory."""
    make, options = SHAPES[shape]
    narrow = write_lines(tmp_path / "narrow.ndjson", make(wide=False))
    wide = write_lines(tmp_path / "wide.ndjson", make(wide=True))
    expected = sessionize.run([narrow], no_geo=True, **options).sessions.sort(KEYS)
    assert expected.height > 10 and expected.get_column("landing_page").null_count() == 0
    assert expected.get_column("user_agent").null_count() == 0 or shape == "posthog"
    keywords = path_options(path, tmp_path)
    result = sessionize.run([wide], no_geo=True, **options, **keywords)
    got = path_sessions(result, keywords).drop("is_final", "session_date", strict=False).sort(KEYS)
    assert_frame_equal(got, expected, check_row_order=False)


def test_an_object_of_50000_keys_is_read_in_linear_time(tmp_path: Path) -> None:
    """Review 52's event: 50,000 keys 13 levels deep. Flattening never ended (and did not answer
    SIGTERM); read with the leaves the run uses alone, the run takes a few seconds (the bound is
    generous: it only tells a finished run from one that never ends)."""
    deep: dict[str, Any] = {f"k{i}": i for i in range(50_000)}
    for _ in range(12):
        deep = {"x": deep}
    events = [
        {
            "user_id": "u1",
            "timestamp": _time(START + timedelta(minutes=n)),
            "url": f"{SITE}/{n}",
            "properties": deep if n == 0 else {"x": {}},
        }
        for n in range(5)
    ]
    source = write_lines(tmp_path / "events.ndjson", events)
    out = tmp_path / "sessions.csv"
    done = subprocess.run(
        [sys.executable, "-m", "sessionize", "run", str(source), "--no-geo", "-q", "-o", str(out)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert pl.read_csv(out).get_column("pageview_count").to_list() == [5]


def test_rejects_keep_the_leaves_the_run_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected row keeps the leaves of a wide object that the run read (one column each, as flattening
    names them), not a column per key any event has; under ``--hash-user-ids`` no copy of the id is in
    the file (PostHog's ``properties.distinct_id`` is not among the leaves read)."""
    events = posthog_events(wide=True)
    events[5]["timestamp"] = "not a time"
    source = write_lines(tmp_path / "events.ndjson", events)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([source], preset="posthog", no_geo=True, on_invalid="skip", rejects=str(rejects))
    assert result.rejected == 1 and result.events_read == EXTRA_KEYS - 1
    written = pl.read_csv(rejects, infer_schema=False)
    assert written.get_column("uuid").to_list() == ["u5"]
    assert written.get_column("properties_$current_url").to_list() == [
        events[5]["properties"]["$current_url"]
    ]
    assert not [c for c in written.columns if c.startswith("properties_$feature")]
    monkeypatch.setenv("WIDE_TEST_SECRET", "s3cret")
    result = sessionize.run(
        [source], preset="posthog", no_geo=True, on_invalid="skip", rejects=str(rejects),
        hash_user_ids="WIDE_TEST_SECRET",
    )  # fmt: skip
    assert result.rejected == 1
    assert ",d1," not in rejects.read_text() and '"d1"' not in rejects.read_text()


def _padded(events: list[dict[str, Any]], *, wide: bool) -> list[dict[str, Any]]:
    """Mixpanel events (``properties`` holds the user id and the time) with, when ``wide``, keys enough
    in ``properties`` to make it too wide to flatten."""
    if not wide:
        return events
    per_event = EXTRA_KEYS // len(events) + 1
    return [
        {**e, "properties": {**e["properties"], **{f"pad_{n}_{k}": k for k in range(per_event)}}}
        for n, e in enumerate(events)
    ]


def _mixpanel(n: int, user: object, **properties: Any) -> dict[str, Any]:
    return {
        "event": "$mp_web_page_view",
        "properties": {"distinct_id": user, "time": 1714557600 + 60 * n, "$insert_id": f"e{n}",
                       "$current_url": f"{SITE}/p{n}", **properties},
    }  # fmt: skip


#: Review 53's cases, where reading the object as JSON text went wrong: ids beyond 64 bits (a float's
#: digits, two users one), booleans among numeric ids (users "true" and "false"), keys with a quote or a
#: backslash (the text Polars gave was no JSON: every leaf of the row lost).
CASES = {
    "ids-beyond-64-bits": [
        _mixpanel(0, 2**64 + 1), _mixpanel(1, 2**64 + 2), _mixpanel(2, -(2**63) - 5),
        _mixpanel(3, -(2**63) - 6), _mixpanel(4, 2**63 + 1), _mixpanel(5, "same"), _mixpanel(6, "same"),
    ],
    "booleans-among-numeric-ids": [_mixpanel(0, 1), _mixpanel(1, 2), _mixpanel(2, True), _mixpanel(3, False)],
    "keys-with-quotes-and-backslashes": [
        _mixpanel(0, "a", **{'utm "source"': "x"}), _mixpanel(1, "a", **{"C:\\path": "y"}),
        _mixpanel(2, "b"), _mixpanel(3, "b", **{"back\\slash\"quote": 1}),
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_wide_object_reads_as_the_narrow_one(case: str, tmp_path: Path) -> None:
    """The same events, their object narrow (flattened) or wide (only the leaves read): the same session
    table and the same rows rejected."""
    results = []
    for wide in (False, True):
        source = write_lines(tmp_path / f"{case}-{wide}.ndjson", _padded(CASES[case], wide=wide))
        results.append(sessionize.run([source], preset="mixpanel", no_geo=True, on_invalid="skip"))
    narrow, wide_result = results
    assert narrow.rejected == wide_result.rejected
    assert_frame_equal(wide_result.sessions.sort(KEYS), narrow.sessions.sort(KEYS))
    users = set(narrow.sessions.get_column("user_id"))
    assert users == {
        "ids-beyond-64-bits": {str(2**64 + 1), str(2**64 + 2), str(-(2**63) - 5), str(-(2**63) - 6),
                               str(2**63 + 1), "same"},
        "booleans-among-numeric-ids": {"1", "2"},
        "keys-with-quotes-and-backslashes": {"a", "b"},
    }[case]  # fmt: skip


@pytest.mark.parametrize(
    "option", [{"filter": "properties.plann=pro"}, {"aggregates": "r=sum(properties.revenu)"}]
)
def test_a_misspelled_key_of_a_wide_object_is_an_error(option: dict[str, Any], tmp_path: Path) -> None:
    """A ``--filter`` or ``--agg`` key that no object has is an error, wide object or narrow (read as JSON
    text, the wide one gave a column of nulls: every row filtered out, exit 0)."""
    events = [_mixpanel(n, "a", plan="pro", revenue=n) for n in range(4)]
    for wide in (False, True):
        source = write_lines(tmp_path / f"events-{wide}.ndjson", _padded(events, wide=wide))
        with pytest.raises(MissingColumnError, match=r"no column 'properties\.(plann|revenu)'"):
            sessionize.run([source], preset="mixpanel", no_geo=True, **option)
