"""The OpenAPI 3.1 document of the HTTP interface, generated from the routes and their schemas.

A view says what it takes and answers with `@documented(...)` beside its route: a summary, the
marshmallow schemas of its query string, body and answers, and the errors it can answer with.
Paths and path parameters come from the URL map (each converter says what a segment may
hold), schemas from marshmallow through apispec, and every error answer is `ErrorSchema`, the
one `app.web.errors` sends. A route without `@documented` is not part of the interface (the
admin UI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields
from werkzeug.routing import BaseConverter, Rule, UnicodeConverter

from app.web.errors import ErrorSchema
from app.web.inputs import MAX_ROW_ID, SEGMENT, RowIdConverter, SegmentConverter

View = TypeVar("View", bound=Callable[..., Any])
SchemaRef = type[Schema] | Schema | Mapping[str, Any]

_MARK = "__openapi_operation__"

# What each error status means here; an operation lists the ones it can answer with.
ERROR_MEANINGS = {
    400: "`malformed`: the body is not JSON, or a cursor is not one this API gave",
    401: "`unauthorized`: no or unknown API token (`bad_signature`: a webhook signature)",
    404: "`not_found`: no such callback token, execution, restart, signature or pause",
    409: "a conflict with the current state (`not_failed`, `restart_pending`, `not_pending`)",
    413: "`too_large`: the body is over the configured limit",
    415: "`unsupported_media_type`: the body is not `application/json`",
    422: "`invalid`: valid JSON or arguments of the wrong shape; `fields` says which and why",
    503: "`unavailable`: the database did not answer (a callback: nor did the spool); nothing "
    "was changed; retry after `Retry-After` seconds",
}


@dataclass(frozen=True)
class Answer:
    """One success answer: its status, what it means and the schema of its body."""

    status: int
    description: str
    schema: SchemaRef | None = None
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: tuple[Answer, ...]
    errors: tuple[int, ...]
    query: type[Schema] | None
    body: SchemaRef | None
    body_required: bool
    headers: tuple[Mapping[str, Any], ...]
    secured: bool
    tag: str | None
    description: str | None


def documented(
    summary: str,
    *answers: Answer,
    errors: Sequence[int] = (),
    query: type[Schema] | None = None,
    body: SchemaRef | None = None,
    body_required: bool = False,
    headers: Sequence[Mapping[str, Any]] = (),
    secured: bool = False,
    tag: str | None = None,
) -> Callable[[View], View]:
    """Describe a view for the OpenAPI document; its docstring becomes the description."""

    def mark(view: View) -> View:
        operation = Operation(
            summary=summary,
            answers=answers,
            errors=tuple(sorted(set(errors) | ({401} if secured else set()))),
            query=query,
            body=body,
            body_required=body_required,
            headers=tuple(headers),
            secured=secured,
            tag=tag,
            description=(view.__doc__ or "").strip() or None,
        )
        setattr(view, _MARK, operation)
        return view

    return mark


def _segment_schema(converter: type[BaseConverter]) -> dict[str, Any]:
    if issubclass(converter, RowIdConverter):
        return {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}
    if issubclass(converter, SegmentConverter):
        return {"type": "string", "pattern": f"^{SEGMENT}$"}
    if issubclass(converter, UnicodeConverter):
        return {"type": "string", "pattern": "^[^/]+$"}
    raise TypeError(f"no OpenAPI schema for the converter {converter.__name__}")


def _openapi_path(app: Flask, rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """`/executions/<segment:execution_id>` -> `/executions/{execution_id}` and its parameter."""
    path, parameters = "", []
    for converter, argument in _parts(rule):
        if converter is None:
            path += argument
            continue
        path += "{" + argument + "}"
        parameters.append(
            {
                "name": argument,
                "in": "path",
                "required": True,
                "schema": _segment_schema(app.url_map.converters[converter]),
            }
        )
    return path, parameters


def _parts(rule: Rule) -> list[tuple[str | None, str]]:
    parts: list[tuple[str | None, str]] = []
    for piece in rule.rule.split("<"):
        if ">" not in piece:
            parts.append((None, piece))
            continue
        variable, static = piece.split(">", 1)
        converter, _, argument = variable.rpartition(":")
        parts.append((converter or "default", argument))
        parts.append((None, static))
    return [part for part in parts if part[1]]


def _content(schema: SchemaRef, media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(operation: Operation, path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
    described: dict[str, Any] = {"summary": operation.summary}
    if operation.description:
        described["description"] = operation.description
    if operation.tag:
        described["tags"] = [operation.tag]
    parameters: list[dict[str, Any]] = list(path_parameters)
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    parameters.extend(dict(header, **{"in": "header"}) for header in operation.headers)
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {
            "required": operation.body_required,
            "content": _content(operation.body),
        }
    responses: dict[str, Any] = {}
    for answer in operation.answers:
        response: dict[str, Any] = {"description": answer.description}
        if answer.schema is not None:
            response["content"] = _content(answer.schema, answer.media_type)
        responses[str(answer.status)] = response
    # A path segment its converter refuses matches no route: a 404 wherever there is one;
    # a body over RESPAWN_MAX_BODY_BYTES is a 413 wherever one is read; the database away is
    # a 503 anywhere in the API.
    errors = set(operation.errors) | ({404} if path_parameters else set())
    errors |= {413} if operation.body is not None else set()
    errors |= {503} if operation.secured else set()  # the API reads the database
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    described["responses"] = responses
    described["security"] = [{"bearer": []}] if operation.secured else []
    return described


def _described_by_field_class(
    self: Any, field: fields.Field[Any], ret: dict[str, Any], **_kwargs: Any
) -> dict[str, Any]:
    """A custom field describes what it accepts in its class attribute `json_schema`."""
    described: dict[str, Any] = dict(getattr(type(field), "json_schema", {}))
    if described and field.allow_none:
        kinds = described.get("type", [])
        described["type"] = [*([kinds] if isinstance(kinds, str) else kinds), "null"]
    return described


def openapi_document(app: Flask) -> dict[str, Any]:
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="respawn",
        version="1",
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={"description": "Callback receiver and restart policy for Runner job executions."},
    )
    assert marshmallow.converter is not None  # set by APISpec on registering the plugin
    # apispec's converter is untyped; the function added is typed above.
    marshmallow.converter.add_attribute_function(_described_by_field_class)  # type: ignore[no-untyped-call]
    spec.components.security_scheme(
        "bearer",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <one of RESPAWN_API_TOKENS>`",
        },
    )
    spec.components.schema("Error", schema=ErrorSchema)
    for status, meaning in ERROR_MEANINGS.items():
        spec.components.response(
            f"Error{status}", {"description": meaning, "content": _content(ErrorSchema)}
        )

    paths: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        operation: Operation | None = getattr(app.view_functions[rule.endpoint], _MARK, None)
        if operation is None:
            continue
        path, parameters = _openapi_path(app, rule)
        _, operations = paths.setdefault(path, (parameters, {}))
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(operation, parameters)
    for path, (_, operations) in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for operations in document["paths"].values():
        for described in operations.values():
            for parameter in described.get("parameters", []):
                _absent_is_not_null(parameter)
    return document


def _absent_is_not_null(parameter: dict[str, Any]) -> None:
    """A query argument left out is absent, not null: `null` is no value of a query string."""
    schema = parameter.get("schema", {})
    if schema.get("default", ...) is None:
        del schema["default"]
    kinds = schema.get("type")
    if isinstance(kinds, list) and "null" in kinds:
        kept = [kind for kind in kinds if kind != "null"]
        schema["type"] = kept[0] if len(kept) == 1 else kept
