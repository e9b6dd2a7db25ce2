"""Text columns holding JSON objects, read as the objects they encode, for the keys a run names.

PostHog's batch exports (S3 Parquet) and the CSV or SQL exports of its events table keep ``properties``
as one JSON-encoded string, where its NDJSON export nests the object (which :func:`flatten_structs
<sessionize.io.read.flatten_structs>` makes ``properties_$current_url``, ``properties_$referrer`` ...).
Read as plain text, the ``posthog`` preset found none of its columns and made every session Direct with
no landing page, without a word. Here, the same names find the same values in either form:

* A text column counts as JSON when a column the run asks for is a path into it (a column option such
  as ``--url-col properties.$current_url``, an ``--agg`` or ``--filter`` column, or a preset's preferred
  column names, ``properties.$current_url``), the input has no column of that name (nested, flattened,
  or alike ignoring case and punctuation: those are read as before), and the column holds JSON objects:
  one of its first :data:`SAMPLE_ROWS` values starts with ``{`` (spaces before it aside), or none of
  them is set. A column of other text (a CSV's ``page`` under ``--url-col page.url``, a typo) stays
  text, and the flag that names a path into it is the error "no column" it was, not a column of nulls.
  The names decide first and the values only veto: every file and every window of a file (the bucketed
  engine, Dask, Spark) whose values are JSON objects gets the same columns, whatever keys it holds.
* Only the keys asked for are read, each as a text column named as flattening names it
  (``properties_$current_url``), so that the column options find it as they find a nested object's. No
  schema is inferred for the whole object: an export's hundreds of keys, of types that vary from event
  to event, could not be typed from a sample without losing or mistyping the keys it left out.
* The key's value is its text: a string as it is, a number, ``true`` or ``false`` as its JSON text
  (``3``, ``1.5``, ``true``; a number is written back by the parser, so ``1e3`` is ``1000.0``), an
  object or array as its JSON text; JSON's ``null``, an absent key, and a value that is not a JSON object
  (empty, invalid JSON, an array, a number) give a null: the same as an event whose nested object lacks
  the key. A required column read from it (``--user-col properties.distinct_id``) rejects that row as
  its null would anywhere; an optional one (the landing page, the referrer) is missing for that event.
* ``properties.a.b`` is the key ``a.b`` when the object has it, else the key ``b`` of its object ``a``.
  Keys match exactly (``$current_url``, case and punctuation kept). A key with a backslash in it is
  never found (the JSON path has no way to name it). A column flag's key that no event of a whole file
  has is warned of (:func:`sessionize.io.read.read_file`): a misspelled key is otherwise a column of nulls.

The values come from Polars' ``str.json_path_match``: one parse of the text per key asked for, in time
linear in its length, vectorized (no Python per row); like any lazy column, only the keys a run reads
are computed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Final

import polars as pl

from sessionize.io.surrogates import well_formed_surrogates
from sessionize.schema import name_key

if TYPE_CHECKING:
    from sessionize.config import ReadOptions

#: A text column holds JSON objects unless none of its first this many values is one (see above).
SAMPLE_ROWS: Final = 1000


def asked_columns(options: ReadOptions) -> list[str]:
    """The input columns a run names: its column options, ``--agg`` and ``--filter`` columns, and the
    preferred column names (a preset's)."""
    preferred = [name for names in options.preferred().values() for name in names]
    filters = [column for column, _ in options.filters]
    return list(dict.fromkeys([*options.wanted_columns(), *preferred, *filters]))


def _json_path(keys: Sequence[str]) -> str:
    """The JSON path of nested ``keys`` in bracket notation (``$['$current_url']``): keys with ``$``,
    ``.``, spaces or quotes in them are keys as they are."""
    return "$" + "".join("['" + key.replace("'", "\\'") + "']" for key in keys)


def _text_column(head: Sequence[str], names: Sequence[str], schema: pl.Schema) -> str | None:
    """The text column (or all-null column) named by the path's first parts ``head``: ``properties``, or a
    flattened ``context_traits``, exactly or alike ignoring case and punctuation (when only one is)."""
    exact = [name for name in (".".join(head), "_".join(head)) if name in schema]
    alike = [name for name in names if name_key(name) == name_key("".join(head))]
    found = exact[0] if exact else alike[0] if len(alike) == 1 else None
    if found is None or schema[found] not in (pl.String, pl.Null):
        return None
    return found


def _paths(asked: Iterable[str], names: Sequence[str]) -> list[list[str]]:
    """The paths of ``asked`` (``properties.$ip``, as its parts) that name no column of ``names``."""
    alike = {name_key(name) for name in names}
    return [
        parts
        for path in dict.fromkeys(asked)
        if len(parts := path.split(".")) > 1
        and all(parts)
        and path not in names
        and path.replace(".", "_") not in names
        and name_key(path) not in alike
    ]


def _holding_objects(frame: pl.LazyFrame, columns: Collection[str]) -> set[str]:
    """Those of the text ``columns`` with a JSON object among their first :data:`SAMPLE_ROWS` values, or
    none set there. A sample that cannot be read (the fast reader on a file it reads line by line instead)
    vetoes nothing: the read that follows meets the same error and handles it."""
    ordered = sorted(columns)
    first = frame.select(ordered).head(SAMPLE_ROWS)
    try:
        sample = first.select(
            (
                pl.col(name).cast(pl.String).str.strip_chars_start().str.starts_with("{").any()
                | pl.col(name).is_null().all()
            ).alias(name)
            for name in ordered
        ).collect()
    except pl.exceptions.PolarsError:
        return set(ordered)
    return {name for name in ordered if sample.get_column(name)[0]}


def json_text_columns(frame: pl.LazyFrame, asked: Iterable[str]) -> pl.LazyFrame:
    """``frame`` with a text column for each path of ``asked`` into a text column of JSON objects (see the
    module's description); other columns as they are."""
    return read_json_text(frame, asked)[0]


def read_json_text(frame: pl.LazyFrame, asked: Iterable[str]) -> tuple[pl.LazyFrame, dict[str, str]]:
    """:func:`json_text_columns`, and the text column each new column was read from
    (``{"properties_$ip": "properties"}``): the rejects leave out a text column that holds a value the
    privacy options hide (see :func:`sessionize.io.read._private_rejects`)."""
    schema = frame.collect_schema()
    names = schema.names()
    paths = _paths(asked, names)
    heads = {
        column
        for parts in paths
        for cut in range(1, len(parts))
        if (column := _text_column(parts[:cut], names, schema)) is not None
    }
    if not heads:
        return frame, {}
    objects = _holding_objects(frame, heads)
    taken = set(names)
    # New column name -> (its text column, the JSON paths tried in turn). Names alike ignoring case and
    # punctuation are one column: the column options would find either (Mixpanel's properties.ip and
    # properties.$ip), and one of keys that no event has would hide the other.
    made: dict[str, tuple[str, list[list[str]]]] = {}
    alike: dict[str, str] = {}
    for parts in paths:
        for cut in range(1, len(parts)):
            column = _text_column(parts[:cut], names, schema)
            if column is None or column not in objects:
                continue
            keys = parts[cut:]
            # properties.a.b: the key "a.b", else the key "b" of the object "a".
            tried = [[".".join(keys)], keys] if len(keys) > 1 else [keys]
            name = f"{column}_{'_'.join(keys)}"
            if name_key(name) in alike:
                made[alike[name_key(name)]][1].extend(tried)
            elif name not in taken:
                made[name] = (column, tried)
                alike[name_key(name)] = name
                taken.add(name)
            break
    columns = [_value(column, tried).alias(name) for name, (column, tried) in made.items()]
    sources = {name: column for name, (column, _) in made.items()}
    return (frame.with_columns(columns) if columns else frame), sources


def _value(column: str, tried: Sequence[Sequence[str]]) -> pl.Expr:
    """The text of the first of the JSON paths ``tried`` that the object in ``column`` has."""
    # A lone surrogate escape (``\ud800``) made the whole object unreadable to Polars' parser: each
    # is U+FFFD, as in an NDJSON file (:mod:`sessionize.io.surrogates`).
    text = pl.col(column).cast(pl.String).map_batches(_well_formed_texts, return_dtype=pl.String)
    # A key with a backslash cannot be named in a JSON path: never found.
    values = [
        text.str.json_path_match(_json_path(keys)) for keys in tried if not any("\\" in k for k in keys)
    ]
    return pl.coalesce(values).cast(pl.String) if values else pl.lit(None, dtype=pl.String)


#: A surrogate pair's escapes, high half then low half.
_PAIR = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"


def _well_formed_texts(texts: pl.Series) -> pl.Series:
    """``texts`` with their lone surrogate escapes replaced: vectorized searches, then only the values
    that may hold a lone half (rare) are mended one by one.

    Those are the values that still hold a surrogate escape once every pair is taken out, and those
    with two backslashes before a surrogate's ``u`` (an escaped backslash, then text: the exact mender
    decides). Without these, each surrogate ``\\u`` is an escape, and one left over is lone. Emoji
    written as pairs (as ``json.dumps`` writes them) are not looked at one by one: a 200k-row PostHog
    export with one per ``properties`` took three times as long to read (review 57 F6)."""
    surrogate = r"\\u[dD][89a-fA-F]"
    held = texts.str.contains(surrogate).fill_null(False)
    if not held.any():
        return texts
    rows = held.arg_true()
    kept = texts.gather(rows)
    maybe_lone = kept.str.replace_all(_PAIR, " ").str.contains(surrogate) | kept.str.contains(
        r"\\\\u[dD][89a-fA-F]"
    )
    if not maybe_lone.any():
        return texts
    rows = rows.filter(maybe_lone)
    mended = [well_formed_surrogates(text.encode()).decode() for text in kept.filter(maybe_lone).to_list()]
    return texts.scatter(rows, mended)


__all__ = ["SAMPLE_ROWS", "asked_columns", "json_text_columns", "read_json_text"]
