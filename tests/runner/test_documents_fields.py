"""A body is read field by field as its schema would read it (app/runner/documents.py): the
same values when every field reads, the schema's own messages when one does not."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import INCLUDE, Schema, ValidationError

from app.runner import documents
from app.runner.documents import DocumentError, parse_execution_document, parse_status_event

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=2**45),  # epoch seconds and milliseconds
    st.floats(),  # NaN and infinities too: a Runner answer read by `requests` may hold them
    st.text(max_size=12),
    st.sampled_from(["", " ", ".", "..", "a/b", "a\\b", "x\x07", "job-1", "1700000000"]),
    st.text(min_size=60, max_size=80),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
timers = st.lists(
    st.one_of(
        st.fixed_dictionaries({}, optional={"start": values, "end": values}),
        values,
    ),
    max_size=3,
)
EVENT_KEYS = ("id", "job_id", "account_alias", "timestamp", "message", "notifications", "x")
DOCUMENT_KEYS = (
    "id",
    "job_id",
    "account_alias",
    "status",
    "start",
    "end",
    "failed_hosts",
    "repository_log",
    "is_vpn_established",
    "x",
)
# Mostly readable values, so that most bodies take the field-by-field reading.
ids = st.one_of(
    st.text(alphabet="abcdef0123456789-_:", min_size=1, max_size=36),
    st.integers(min_value=0, max_value=10**12),
    st.sampled_from([" padded ", "job-1"]),
)
epoch = st.one_of(
    st.integers(min_value=0, max_value=2**45),
    st.floats(min_value=0, max_value=2e12),
    st.sampled_from(["1700000000", "1700000000000.5"]),
)
readable_timers = st.lists(
    st.fixed_dictionaries({}, optional={"start": st.none() | epoch, "end": st.none() | epoch}),
    max_size=3,
)
readable_events = st.fixed_dictionaries(
    {
        "execution_id": ids,
        "event_type": st.sampled_from(["runner_on_ok", " Runner_On_Failed ", "playbook_result"]),
    },
    optional={"id": st.none() | ids, "job_id": st.none() | ids, "account_alias": st.none() | ids}
    | {"timestamp": st.none() | epoch, "message": values, "notifications": values, "x": values},
)
readable_documents = st.fixed_dictionaries(
    {"execution_id": ids},
    optional={"id": st.none() | ids, "job_id": st.none() | ids, "account_alias": st.none() | ids}
    | {
        "status": st.sampled_from(["FAILURE", "running", "init_failure", "weird", 3]),
        "timers": st.none() | readable_timers,
        "start": st.none() | epoch,
        "end": st.none() | epoch,
        "failed_hosts": st.none() | st.lists(ids, max_size=3),
        "repository_log": st.none() | st.text(max_size=20),
        "is_vpn_established": st.none() | st.booleans(),
        "x": values,
    },
)
events = st.fixed_dictionaries(
    {"event_type": st.one_of(st.text(max_size=70), values)},
    optional={"execution_id": st.one_of(st.text(min_size=1, max_size=10), values)}
    | {key: values for key in EVENT_KEYS},
)
documents_ = st.fixed_dictionaries(
    {},
    optional={"execution_id": st.one_of(st.text(min_size=1, max_size=10), values)}
    | {key: values for key in DOCUMENT_KEYS}
    | {"timers": st.one_of(timers, values), "failed_hosts": st.lists(values, max_size=3)},
)


def _schema_reading(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    """What `schema.load` alone makes of `data`: its declared fields, or its messages."""
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        return {"refused": exc.messages}
    return {"read": {name: loaded[name] for name in schema.load_fields if name in loaded}}


def _reading(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"read": documents._load(schema, data)}
    except DocumentError as exc:
        return {"refused": exc.fields}


def _same(left: Any, right: Any) -> bool:
    """Equal, NaN included (a NaN kept in a raw field is the same object, not equal)."""
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    return bool(left == right)


def _fields_read_as_the_schema_reads_them(schema: Schema, data: dict[str, Any]) -> bool:
    """The field-by-field reading on its own: the schema's values when it gives any, and
    None exactly when the schema refuses."""
    read = documents._read_fields(schema, data)
    expected = _schema_reading(schema, data)
    if read is None:
        return "refused" in expected
    return _same({"read": read}, expected)


@settings(max_examples=300, deadline=None)
@given(st.one_of(readable_events, events))
def test_an_event_is_read_field_by_field_as_its_schema_reads_it(data: dict[str, Any]) -> None:
    assert _fields_read_as_the_schema_reads_them(documents._EVENT_SCHEMA, data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(readable_documents, documents_))
def test_a_document_is_read_field_by_field_as_its_schema_reads_it(data: dict[str, Any]) -> None:
    assert _fields_read_as_the_schema_reads_them(documents._DOCUMENT_SCHEMA, data)


def test_readable_bodies_take_the_field_by_field_reading() -> None:
    """The strategies above reach the reading itself, not only the schema's refusals."""
    found = {"events": 0, "documents": 0}

    @settings(max_examples=100, deadline=None, database=None)
    @given(readable_events, readable_documents)
    def count(event: dict[str, Any], document: dict[str, Any]) -> None:
        found["events"] += documents._read_fields(documents._EVENT_SCHEMA, event) is not None
        found["documents"] += (
            documents._read_fields(documents._DOCUMENT_SCHEMA, document) is not None
        )

    count()
    assert found["events"] >= 50 and found["documents"] >= 50


@settings(max_examples=400, deadline=None)
@given(events)
def test_an_event_reads_as_its_schema_reads_it(data: dict[str, Any]) -> None:
    schema = documents._EVENT_SCHEMA
    assert _same(_reading(schema, data), _schema_reading(schema, data))


@settings(max_examples=400, deadline=None)
@given(documents_)
def test_a_document_reads_as_its_schema_reads_it(data: dict[str, Any]) -> None:
    schema = documents._DOCUMENT_SCHEMA
    assert _same(_reading(schema, data), _schema_reading(schema, data))


@pytest.mark.parametrize("schema", [documents._EVENT_SCHEMA, documents._DOCUMENT_SCHEMA])
def test_the_schemas_have_nothing_a_field_by_field_reading_would_skip(schema: Schema) -> None:
    """`pre_load`, `post_load` and `validates_schema` run in `schema.load` only, and so does
    refusing unknown fields (with `unknown` other than INCLUDE) or a partial load."""
    assert not any(type(schema)._hooks.values())
    assert schema.unknown == INCLUDE
    assert schema.partial is None
    assert all(
        field.data_key is None and field.attribute is None for field in schema.fields.values()
    )


def test_a_plain_event_is_read_without_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """The field-by-field reading is what runs for a body whose fields all read."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("schema.load ran")

    monkeypatch.setattr(documents._EVENT_SCHEMA, "load", refuse)
    event = parse_status_event(
        {
            "id": "e-1",
            "execution_id": " exec-1 ",
            "event_type": " Runner_On_Failed ",
            "timestamp": 1_700_000_000,  # seconds
            "message": {"host": "web1"},
            "extra": 1,
        }
    )
    assert (event.event_id, event.execution_id, event.event_type) == (
        "e-1",
        "exec-1",
        "runner_on_failed",
    )
    assert event.timestamp_ms == 1_700_000_000_000
    assert event.job_id is None and event.account_alias is None
    assert event.extra == {"extra": 1}


def test_a_refused_field_gets_every_message_the_schema_gives() -> None:
    with pytest.raises(DocumentError) as refused:
        parse_status_event({"execution_id": "..", "event_type": "", "timestamp": "soon"})
    assert set(refused.value.fields) == {"execution_id", "event_type", "timestamp"}
    with pytest.raises(DocumentError) as missing:
        parse_execution_document({"status": "FAILURE", "timers": [{"start": -1}]})
    assert "execution_id" in missing.value.fields
    assert "timers" in missing.value.fields
