"""The OpenAPI 3.1 document of respawn's HTTP interface (`GET /api/v1/openapi.json`)."""

from __future__ import annotations

from typing import Any

from app.runner.documents import STATUSES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "malformed request",
        401: "missing or unknown token",
        404: "unknown token or id",
        409: "conflict with the current state",
        413: "body too large",
        415: "not JSON",
        422: "valid JSON of the wrong shape",
        503: "database unavailable",
    }
    return {str(code): _json(_ref("Error"), texts[code]) for code in codes}


_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TIME = {"type": "string", "format": "date-time"}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message", "fields"],
        "properties": {
            "error": {"type": "string", "description": "short code"},
            "message": {"type": "string"},
            "fields": {"type": "object", "description": "field name → messages"},
        },
    },
    "Accepted": {
        "type": "object",
        "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"}},
    },
    "ExecutionDocument": {
        "type": "object",
        "required": ["execution_id"],
        "description": "The Runner's execution document (extra fields are kept).",
        "properties": {
            "execution_id": {"type": "string"},
            "job_id": {"type": "string"},
            "account_alias": {"type": "string"},
            "status": {"type": "string", "description": "case-insensitive: " + ", ".join(STATUSES)},
            "timers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "start": {"type": ["integer", "null"], "description": "epoch ms"},
                        "end": {"type": ["integer", "null"], "description": "epoch ms"},
                    },
                },
            },
            "start": {"type": ["integer", "null"]},
            "end": {"type": ["integer", "null"]},
            "failed_hosts": {"type": "array", "items": {}},
            "repository_log": {"type": ["string", "object", "null"]},
            "is_vpn_established": {"type": ["boolean", "null"]},
        },
    },
    "StatusEvent": {
        "type": "object",
        "required": ["execution_id", "event_type"],
        "properties": {
            "id": {"type": "string"},
            "timestamp": {"type": "integer", "description": "epoch ms"},
            "account_alias": {"type": "string"},
            "job_id": {"type": "string"},
            "execution_id": {"type": "string"},
            "event_type": {"type": "string", "examples": ["runner_on_failed", "playbook_result"]},
            "message": {},
            "notifications": {"type": "array"},
        },
    },
    "Timer": {
        "type": "object",
        "properties": {
            "run": {"type": "integer"},
            "status": {"type": "string"},
            "start": {"type": ["integer", "null"]},
            "end": {"type": ["integer", "null"]},
            "started_at": _NULLABLE_TIME,
            "ended_at": _NULLABLE_TIME,
            "start_derived": {"type": "boolean"},
            "end_derived": {"type": "boolean"},
        },
    },
    "ExecutionSummary": {
        "type": "object",
        "properties": {
            "execution_id": {"type": "string"},
            "account_alias": {"type": "string"},
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "run_count": {"type": "integer"},
            "current_run": {"type": "integer"},
            "failed_hosts": {"type": "array", "items": {"type": "string"}},
            "restart_count": {"type": "integer"},
            "is_vpn_established": {"type": ["boolean", "null"]},
            "first_seen_at": _TIME,
            "last_seen_at": _TIME,
            "last_event_at": _NULLABLE_TIME,
            "first_failure_at": _NULLABLE_TIME,
        },
    },
    "Decision": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "run": {"type": "integer"},
            "origin": {"type": "string", "enum": ["policy", "manual", "release"]},
            "action": {"type": "string", "enum": ["restart", "skip", "held"]},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "excluded_hosts": {"type": "array", "items": {"type": "object"}},
            "due_at": _NULLABLE_TIME,
            "backoff_seconds": {"type": ["number", "null"]},
            "rule": {"type": "string"},
            "reason_code": {"type": "string"},
            "reason": {"type": "string"},
            "policy_version": {"type": "string"},
            "actor": _NULLABLE_STR,
            "created_at": _TIME,
            "signature": {
                "type": ["string", "null"],
                "description": "the failure's error signature (see /api/v1/signatures)",
            },
            "deferred_by": {
                "type": ["string", "null"],
                "description": "the blackout window the restart was deferred to the end of",
            },
            "held_until": _NULLABLE_TIME,
        },
    },
    "Signature": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "failure_class": {"type": "string"},
            "text": {"type": "string", "description": "the message, variable parts masked"},
            "open": {"type": "boolean"},
            "until": _NULLABLE_TIME,
            "executions": {"type": "integer"},
            "jobs": {"type": "array", "items": {"type": "string"}},
            "held": {"type": "integer", "description": "restarts it holds"},
            "last_seen_at": _TIME,
            "closed_by": _NULLABLE_STR,
        },
    },
    "Restart": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "decision_id": {"type": "integer"},
            "run": {"type": "integer"},
            "manual": {"type": "boolean"},
            "state": {
                "type": "string",
                "enum": ["pending", "in_flight", "done", "failed", "not_needed", "cancelled"],
            },
            "hosts": {"type": "array", "items": {"type": "string"}},
            "due_at": _TIME,
            "attempts": {"type": "integer"},
            "outcome": _NULLABLE_STR,
            "outcome_detail": _NULLABLE_STR,
            "result": {"type": ["string", "null"], "enum": ["succeeded", "failed_again", None]},
            "sent_at": _NULLABLE_TIME,
            "completed_at": _NULLABLE_TIME,
            "cancelled_by": _NULLABLE_STR,
            "hold_signature": _NULLABLE_STR,
            "attempt_log": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "run": {"type": "integer"},
            "kind": {"type": "string", "enum": ["event", "document"]},
            "event_type": _NULLABLE_STR,
            "event_id": _NULLABLE_STR,
            "host": _NULLABLE_STR,
            "status": _NULLABLE_STR,
            "timestamp": {"type": ["integer", "null"]},
            "event_at": _NULLABLE_TIME,
            "received_at": _TIME,
            "payload": {"description": "as received, secrets redacted"},
        },
    },
}

_EXECUTION_ID = {
    "name": "execution_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "schema": {"type": "string"},
    "description": "next_cursor of the previous page",
}


def _page_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _ref(name)},
            "next_cursor": _NULLABLE_STR,
        },
    }


def openapi_document() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    job_param = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    pause_ok = _json({"type": "object"}, "pause state")
    signature_param = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "respawn",
            "version": "1",
            "description": "Callback receiver and restart policy for Runner job executions.",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/callbacks/{token}": {
                "post": {
                    "summary": "Receive a status event, an execution document, or an array",
                    "parameters": [
                        {
                            "name": "token",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref("StatusEvent"),
                                        _ref("ExecutionDocument"),
                                        {
                                            "type": "array",
                                            "items": {
                                                "oneOf": [
                                                    _ref("StatusEvent"),
                                                    _ref("ExecutionDocument"),
                                                ]
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(_ref("Accepted"), "stored"),
                        **_errors(400, 401, 404, 413, 415, 422, 503),
                    },
                }
            },
            "/api/v1/executions": {
                "get": {
                    "summary": "Executions, newest activity first",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "comma-separated statuses",
                        },
                        {"name": "account", "in": "query", "schema": {"type": "string"}},
                        {"name": "job", "in": "query", "schema": {"type": "string"}},
                        {"name": "host", "in": "query", "schema": {"type": "string"}},
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _json(_page_of("ExecutionSummary"), "a page"),
                        **_errors(400, 401, 422),
                    },
                }
            },
            "/api/v1/executions/{execution_id}": {
                "get": {
                    "summary": "State, timers, failed hosts, decisions, restarts",
                    "security": bearer,
                    "parameters": [_EXECUTION_ID],
                    "responses": {
                        "200": _json(_ref("ExecutionSummary"), "the execution"),
                        **_errors(401, 404),
                    },
                }
            },
            "/api/v1/executions/{execution_id}/events": {
                "get": {
                    "summary": "Stored deliveries in the order received",
                    "security": bearer,
                    "parameters": [_EXECUTION_ID, _LIMIT, _CURSOR],
                    "responses": {
                        "200": _json(_page_of("Event"), "a page"),
                        **_errors(400, 401, 404, 422),
                    },
                }
            },
            "/api/v1/executions/{execution_id}/restart": {
                "post": {
                    "summary": "Queue a manual restart (all failed hosts unless `hosts` given)",
                    "security": bearer,
                    "parameters": [_EXECUTION_ID],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "hosts": {
                                            "type": ["array", "null"],
                                            "items": {"type": "string"},
                                        },
                                        "reason": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "decision": _ref("Decision"),
                                    "restart": _ref("Restart"),
                                },
                            },
                            "queued",
                        ),
                        **_errors(400, 401, 404, 409, 415, 422),
                    },
                }
            },
            "/api/v1/restarts/{restart_id}/cancel": {
                "post": {
                    "summary": "Cancel a pending restart",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "restart_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Restart"), "cancelled"),
                        **_errors(401, 404, 409),
                    },
                }
            },
            "/api/v1/pauses": {
                "get": {
                    "summary": "Pauses of automatic restarts",
                    "security": bearer,
                    "responses": {"200": pause_ok, **_errors(401)},
                }
            },
            "/api/v1/pauses/global": {
                "put": {
                    "summary": "Pause automatic restarts of every job",
                    "security": bearer,
                    "responses": {"200": pause_ok, **_errors(401, 422)},
                },
                "delete": {
                    "summary": "Resume them",
                    "security": bearer,
                    "responses": {"200": pause_ok, **_errors(401, 404)},
                },
            },
            "/api/v1/pauses/jobs/{job_id}": {
                "put": {
                    "summary": "Pause automatic restarts of one job",
                    "security": bearer,
                    "parameters": [job_param],
                    "responses": {"200": pause_ok, **_errors(401, 422)},
                },
                "delete": {
                    "summary": "Resume them",
                    "security": bearer,
                    "parameters": [job_param],
                    "responses": {"200": pause_ok, **_errors(401, 404)},
                },
            },
            "/api/v1/signatures": {
                "get": {
                    "summary": "Error signatures whose breaker is open or that hold restarts",
                    "security": bearer,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Signature")}
                                },
                            },
                            "signatures",
                        ),
                        **_errors(401),
                    },
                }
            },
            "/api/v1/signatures/{key}": {
                "get": {
                    "summary": "One error signature and its breaker",
                    "security": bearer,
                    "parameters": [signature_param],
                    "responses": {
                        "200": _json(_ref("Signature"), "signature"),
                        **_errors(401, 404),
                    },
                }
            },
            "/api/v1/signatures/{key}/close": {
                "post": {
                    "summary": "Close a signature's breaker by hand (audited)",
                    "security": bearer,
                    "parameters": [signature_param],
                    "responses": {
                        "200": _json(_ref("Signature"), "closed, with released and dropped"),
                        **_errors(401, 404),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json({"type": "object"}, "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: database, migrations, policy",
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        "503": _json({"type": "object"}, "not ready"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition"}},
                }
            },
        },
    }
