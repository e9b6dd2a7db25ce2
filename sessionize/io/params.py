"""``--unnest-params``: key/value arrays (GA4's ``event_params``) turned into columns.

GA4's BigQuery export keeps most of an event's fields in ``event_params``, a list of
``{key, value: {string_value, int_value, float_value, double_value}}`` structs; other exports use the
same shape with a plain ``value``. Named with ``--unnest-params event_params``, each key becomes a text
column ``event_params_<key>`` (so ``--url-col event_params.page_location`` finds it: column names match
ignoring case and punctuation), read like every other column of the input.

* The value is the first of the value struct's fields that is set, as text (GA4 sets exactly one of
  them); a plain ``value`` is cast to text. A key given twice in one event keeps its first value.
* An event without the key, or with a null list, has a null value.
* The keys are an input's own distinct keys. Event parameters are written by the client, so a hostile
  or buggy one can send any number of distinct keys: only the :data:`MAX_KEYS` most frequent become
  columns (with a warning naming how many were left out), so one input cannot make thousands of
  columns. A key whose column name is already taken by a top-level column is left out too.
* The unnested columns are lazy expressions: only those a run reads (the resolved columns) are
  computed. The rejected rows keep the list itself, as JSON text (:func:`as_json_lists`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import polars as pl

from sessionize.errors import MissingColumnError, SessionizeWarning
from sessionize.normalize import ROW, float_text
from sessionize.schema import column_listing, name_key

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

#: At most this many keys of one key/value column become columns (the most frequent ones).
MAX_KEYS: Final = 500

#: GA4's value struct: the fields in the order they are tried.
_GA4_VALUE_FIELDS: Final = ("string_value", "int_value", "float_value", "double_value")


def _find(names: Sequence[str], wanted: str) -> str | None:
    exact = [name for name in names if name == wanted]
    if exact:
        return exact[0]
    found = [name for name in names if name_key(name) == name_key(wanted)]
    return found[0] if found else None


def _value_expr(value_dtype: pl.DataType) -> pl.Expr:
    """The text of one element's ``value`` field (an expression on ``pl.element()``). A whole float is
    written as an integer (:func:`sessionize.normalize.float_text`): GA4's ``ga_session_id`` sent as a
    ``double_value`` (``1714730400.0``, a Measurement Protocol number) is the ``int_value`` of the
    session's other events (``1714730400``), not a session of its own (review 59 F5)."""
    value = pl.element().struct.field("value")
    if isinstance(value_dtype, pl.Struct):
        types = {f.name: f.dtype for f in value_dtype.fields}
        ordered = [f for f in _GA4_VALUE_FIELDS if f in types] + [
            f for f in types if f not in _GA4_VALUE_FIELDS
        ]
        if not ordered:
            return pl.lit(None, dtype=pl.String)
        return pl.coalesce([_text(value.struct.field(f), types[f]) for f in ordered])
    return _text(value, value_dtype)


def _text(value: pl.Expr, dtype: PolarsDataType) -> pl.Expr:
    """``value`` of type ``dtype`` as text, a whole float as an integer, NaN and infinities none (null,
    as in a float column: a NaN ``ga_session_id`` was the session id ``NaN``)."""
    return pl.when(value.is_finite()).then(float_text(value)) if dtype.is_float() else value.cast(pl.String)


def _key_value_dtype(dtype: pl.DataType) -> pl.DataType | None:
    """The ``value`` field's type of a list of ``{key, value}`` structs, or None for another shape."""
    if not isinstance(dtype, pl.List):
        return None
    inner = dtype.inner
    if not isinstance(inner, pl.Struct):
        return None
    fields = {f.name: f.dtype for f in inner.fields}
    if "key" not in fields or "value" not in fields:
        return None
    value = fields["value"]
    return value if isinstance(value, pl.DataType) else value()


def as_json_lists(frame: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """``frame`` with the key/value list columns named in ``columns`` as JSON text (``[{"key": ...}]``):
    how the rejected rows keep them, in time linear in their size. Other columns are left as they are."""
    if not columns:
        return frame
    schema = frame.collect_schema()
    names = schema.names()
    found = [name for given in columns if (name := _find(names, given)) is not None]
    listed = [name for name in found if _key_value_dtype(schema[name]) is not None]
    return frame.with_columns(
        pl.when(pl.col(name).is_not_null())
        .then(
            pl.concat_str(
                pl.lit("["),
                pl.col(name).list.eval(pl.element().struct.json_encode()).list.join(","),
                pl.lit("]"),
            )
        )
        .alias(name)
        for name in listed
    )


def unnest_params(
    frame: pl.LazyFrame, columns: Sequence[str], *, source: str, wanted: Sequence[str] = ()
) -> pl.LazyFrame:
    """``frame`` with each key/value list column named in ``columns`` replaced by one text column per
    key (see the module's description). ``source`` names the input in errors and warnings.

    ``wanted`` are the column names the run asks for (``--url-col event_params.page_location``): those
    of an unnested column are always made, null where no event has the key (an input of direct
    visits only has no ``page_referrer``), and do not count against :data:`MAX_KEYS`."""
    if not columns:
        return frame
    schema = frame.collect_schema()
    names = schema.names()
    for given in columns:
        name = _find(names, given)
        if name is None:
            listing = column_listing([n for n in names if n != ROW])
            raise MissingColumnError(
                f"{source}: --unnest-params {given!r}: no such column. Its columns are: {listing}. An export "
                "whose parameters are already columns needs no unnesting: give --unnest-params '' and name "
                "the columns a preset takes from the list (GA4: --session-col ga_session_id)."
            )
        value_dtype = _key_value_dtype(schema[name])
        if value_dtype is None:
            raise MissingColumnError(
                f"{source}: --unnest-params {name!r} is {schema[name]}, not a list of {{key, value}} "
                "structs (as GA4's event_params). Name such a column, or leave the option out."
            )
        keys = (
            frame.select(pl.col(name).list.eval(pl.element().struct.field("key")).explode().alias("key"))
            .drop_nulls()
            .group_by("key")
            .len()
            .sort(["len", "key"], descending=[True, False])
            .collect(engine="in-memory")
        )
        taken = set(names)
        prefix = f"{name}_"
        asked = [
            column.replace(".", "_")[len(prefix) :]
            for column in wanted
            if column not in taken and column.replace(".", "_").startswith(prefix)
        ]
        chosen: list[str] = []
        for key in [*asked, *keys.get_column("key").cast(pl.String).to_list()]:
            if len(chosen) == MAX_KEYS + len(asked):
                break
            column = f"{name}_{key}"
            if column not in taken:
                taken.add(column)
                chosen.append(key)
        if keys.height > MAX_KEYS:
            present = set(keys.get_column("key").cast(pl.String).to_list())
            kept = len([key for key in chosen if key in present])
            warnings.warn(
                f"{source}: {name} holds {keys.height} distinct keys; {kept} became columns (the "
                f"{MAX_KEYS} most frequent and those the column options name), {keys.height - kept} did not.",
                SessionizeWarning,
                stacklevel=2,
            )
        value = _value_expr(value_dtype)
        key_expr = pl.element().struct.field("key").cast(pl.String)
        unnested = [
            pl.col(name).list.eval(value.filter(key_expr == key)).list.first().alias(f"{name}_{key}")
            for key in chosen
        ]
        frame = frame.with_columns(unnested).drop(name)
        names = frame.collect_schema().names()
    return frame


__all__ = ["MAX_KEYS", "as_json_lists", "unnest_params"]
