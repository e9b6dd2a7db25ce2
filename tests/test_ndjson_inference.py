"""An NDJSON file's column types, inferred from every line in time linear in its size (review 53, F5).

Polars' inference over every line merged each line's types into the types so far: a file whose events
each bring a key of their own (PostHog's ``$feature/<flag>`` properties) took time with the square of its
lines (20,000 events 6 s, 100,000 more than 200 s). :func:`sessionize.io.infer.infer_ndjson_schema`
infers blocks of lines and merges their schemas by Polars' own rules; these tests hold it to Polars'
answer over the whole file.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sessionize.io import infer
from sessionize.io.infer import infer_ndjson_schema, merge_schemas


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few lines and merges of a few schemas, so that small files take every step."""
    monkeypatch.setattr(infer, "MIN_BLOCK_LINES", 3)
    monkeypatch.setattr(infer, "MAX_BLOCK_LINES", 7)
    monkeypatch.setattr(infer, "BLOCK_BUDGET", 40)


def _polars(data: bytes) -> pl.Schema:
    return pl.scan_ndjson(io.BytesIO(data), infer_schema_length=None).collect_schema()


#: Keys with quotes, backslashes, non-ASCII letters and an empty one: they must come back as written.
KEYS = ["a", "b", "c", 'q"uote', "back\\slash", "é", "😀", "", "$feature/x"]
SCALARS: dict[str, Any] = {"bool": True, "int": 3, "wide": 1 << 70, "float": 0.25, "text": "x"}


def _spec(rng: random.Random, depth: int) -> Any:
    """What a field holds in every line of a file: a few kinds of scalar, an object of fields, or a
    list of one such spec (a JSON null may stand for any)."""
    kind = rng.choice(["scalars", "scalars", "object", "list"] if depth < 3 else ["scalars"])
    if kind == "scalars":
        return rng.sample(list(SCALARS), rng.randint(1, 3))
    if kind == "object":
        return {key: _spec(rng, depth + 1) for key in rng.sample(KEYS, rng.randint(0, 4))}
    return (_spec(rng, depth + 1),)


def _value(rng: random.Random, spec: Any) -> Any:
    if rng.random() < 0.1:
        return None
    if isinstance(spec, list):
        return SCALARS[rng.choice(spec)]
    if isinstance(spec, dict):
        return {key: _value(rng, inner) for key, inner in spec.items() if rng.random() < 0.6}
    return [_value(rng, spec[0]) for _ in range(rng.randint(0, 2))]


def _random_file(seed: int) -> list[Any]:
    """Up to 40 lines whose fields each keep to one spec (:func:`_spec`): the kinds of values that
    exports mix (a number that is sometimes a float or a string, keys an event leaves out)."""
    rng = random.Random(seed)
    spec = {key: _spec(rng, 1) for key in KEYS}
    return [
        _value(rng, {key: spec[key] for key in rng.sample(KEYS, rng.randint(0, 5))}) or {}
        for _ in range(rng.randint(1, 40))
    ]


def _infer_both(lines: list[Any], *, separator: bytes = b"\n") -> tuple[pl.Schema, pl.Schema | None]:
    data = separator.join(json.dumps(line).encode() for line in lines) + separator
    try:
        expected: pl.Schema | None = _polars(data)
    except pl.exceptions.PolarsError:
        expected = None
    if expected is None:
        with pytest.raises(pl.exceptions.PolarsError):
            infer_ndjson_schema(data)
        return pl.Schema(), None
    return infer_ndjson_schema(data), expected


def _unordered(dtype: Any) -> Any:
    """``dtype`` with each object's keys in name order: where Polars merges two objects it puts the keys
    of the larger first, so the order of keys depends on how the lines were grouped."""
    if isinstance(dtype, pl.Struct):
        return tuple(
            (field.name, _unordered(field.dtype)) for field in sorted(dtype.fields, key=lambda f: f.name)
        )
    if isinstance(dtype, pl.List):
        return ("list", _unordered(dtype.inner))
    return dtype


@pytest.mark.parametrize("seed", range(300))
def test_the_types_are_those_polars_infers_from_every_line(seed: int, small_blocks: None) -> None:
    """Random files (objects, lists, every scalar kind, keys left out, odd keys; each field keeps to
    the kinds of values exports mix), read in blocks of 3 to 7 lines and merged a few at a time: the
    same columns and types as Polars' inference over the whole file, or the same failure."""
    got, expected = _infer_both(_random_file(seed))
    if expected is not None:
        assert _unordered(pl.Struct(dict(got))) == _unordered(pl.Struct(dict(expected)))


def test_an_export_keeps_the_order_of_its_keys(tmp_path: Path) -> None:
    """A PostHog-like export of 30,000 events (many blocks) whose events leave out some properties and
    bring others late: the columns, and the keys of each object, in the order of Polars' inference over
    the whole file (which the rejects' columns and the messages' listings follow)."""
    rng = random.Random(7)
    path = tmp_path / "events.ndjson"
    with path.open("w", encoding="utf-8") as handle:
        for n in range(30_000):
            properties: dict[str, Any] = {
                "$current_url": f"https://shop.example/{n % 7}",
                "$session_id": f"s{n // 50}",
            }
            for key in rng.sample(["$referrer", "$browser", "$os", "utm_source", "$set"], rng.randint(0, 3)):
                properties[key] = {"plan": "pro", "seats": n} if key == "$set" else f"v{n % 3}"
            if n > 25_000:
                properties["late_key"] = n
            event = {
                "uuid": f"e{n}",
                "event": "$pageview",
                "distinct_id": f"d{n % 300}",
                "properties": properties,
            }
            if n % 10:
                event["timestamp"] = "2024-05-01T09:00:00Z"
            handle.write(json.dumps(event) + "\n")
    expected = pl.scan_ndjson(path, infer_schema_length=None).collect_schema()
    assert infer_ndjson_schema(str(path)) == expected
    got, want = infer_ndjson_schema(str(path))["properties"], expected["properties"]
    assert isinstance(got, pl.Struct) and isinstance(want, pl.Struct)
    assert [field.name for field in got.fields] == [field.name for field in want.fields]


def test_a_key_that_comes_late_and_its_type_change_count(small_blocks: None, tmp_path: Path) -> None:
    """A key first sent on the file's last line, and a field that is an integer on 50 lines and a float
    or a string at the end, read from a path as from bytes."""
    lines: list[dict[str, Any]] = [{"user": f"u{n}", "n": n, "o": {"x": n}} for n in range(50)]
    lines += [{"user": "late", "n": 0.5, "o": {"x": "text", "y": [1]}, "new": True}]
    path = tmp_path / "events.ndjson"
    path.write_text("\r\n".join(json.dumps(line) for line in lines) + "\n\n\n", encoding="utf-8")
    schema = infer_ndjson_schema(str(path))
    assert schema == pl.Schema(
        {
            "user": pl.String(),
            "n": pl.Float64(),
            "o": pl.Struct({"x": pl.String(), "y": pl.List(pl.Int64())}),
            "new": pl.Boolean(),
        }
    )
    assert infer_ndjson_schema(path.read_bytes()) == schema
    assert schema == _polars(path.read_bytes())


def test_an_integer_and_a_list_in_one_field_fail_as_in_polars(small_blocks: None) -> None:
    """Polars cannot merge them (the careful reader then rejects the rarer kind): neither can this,
    whichever blocks they fall in."""
    lines = [{"a": n} for n in range(20)] + [{"a": [1]}]
    assert _infer_both(lines)[1] is None


def test_merging_keeps_the_first_order_of_keys() -> None:
    """Polars puts the keys of the object with more keys first when it merges two; the schemas of the
    blocks are merged with each object's keys as they first came."""
    first = pl.Schema({"o": pl.Struct({"b": pl.Int64()})})
    second = pl.Schema(
        {"z": pl.Null(), "o": pl.Struct({"c": pl.Int64(), "b": pl.String(), "d": pl.Boolean()})}
    )
    merged = merge_schemas([first, second])
    assert merged == pl.Schema(
        {"o": pl.Struct({"b": pl.String(), "c": pl.Int64(), "d": pl.Boolean()}), "z": pl.Null()}
    )
    assert list(merged) == ["o", "z"]
    assert merge_schemas([]) == pl.Schema()


def test_a_stream_is_read_from_its_start_and_left_where_it_was() -> None:
    stream = io.BytesIO(b'{"a": 1}\n{"b": "x"}\n')
    stream.seek(5)
    assert infer_ndjson_schema(stream) == pl.Schema({"a": pl.Int64, "b": pl.String})
    assert stream.tell() == 5


def test_events_that_each_bring_a_key_of_their_own_take_linear_time(tmp_path: Path) -> None:
    """Review 53's F5: 150,000 PostHog events, each with a feature flag of its own. Polars' inference
    over every line took time with the square of the lines (20,000 events 6 s, 100,000 more than
    200 s); by blocks the run takes seconds (the bound is generous: it tells a linear run from a
    quadratic one, it measures nothing)."""
    path = tmp_path / "events.ndjson"
    with path.open("w", encoding="utf-8") as handle:
        for n in range(150_000):
            event = {
                "uuid": f"e{n}",
                "event": "$pageview",
                "distinct_id": f"d{n % 1000}",
                "timestamp": f"2024-05-01T{n // 7200 % 24:02d}:{n // 120 % 60:02d}:{n // 2 % 60:02d}Z",
                "properties": {"$current_url": f"https://shop.example/p{n % 9}", f"$feature/flag-{n}": "on"},
            }
            handle.write(json.dumps(event) + "\n")
    out = tmp_path / "sessions.parquet"
    command = ["run", str(path), "--preset", "posthog", "--no-geo", "-q", "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "sessionize", *command],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    sessions = pl.read_parquet(out)
    assert sessions.get_column("event_count").sum() == 150_000
    assert sessions.get_column("landing_page").str.starts_with("https://shop.example/p").all()
