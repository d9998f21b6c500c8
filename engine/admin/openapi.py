"""The admin API's OpenAPI 3.1 document, written by hand beside the routes it describes.

`tests/admin/test_openapi.py` checks that every route of `make_app` is described here with
its methods, and nothing else; and that the schemas' required fields are the fields the
values in `engine.admin.contract` actually write.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict:
    return {"$ref": _REF + name}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _err(description: str) -> dict:
    return _json(_ref("Error"), description)


_NULLABLE_STR = {"type": ["string", "null"]}
_AUTH_ERRORS = {
    "401": _err("No `Authorization: Bearer` header (the response carries `WWW-Authenticate: Bearer`)"),
    "403": _err("Wrong token (`forbidden`)"),
}

_SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {
                "type": "string",
                "description": "A code: unauthorized, forbidden, bad_request, not_found, too_large, "
                "precondition_failed, stale_base, plan_mismatch, invalid, downgrade_refused, apply_failed, internal",
            },
            "detail": {"type": "string", "description": "What went wrong, in words"},
            "running_version": {"type": "integer", "description": "The version the relay runs (409, 412, 422, 403)"},
            "diagnostics": {"type": "array", "items": _ref("Diagnostic")},
            "summary": _ref("ChangeCounts"),
            "result": {"type": "object", "description": "The full ApplyResult or PlanResult"},
        },
    },
    "Diagnostic": {
        "type": "object",
        "required": ["severity", "path", "message"],
        "properties": {
            "severity": {"enum": ["error", "warning"]},
            "path": {"type": "string", "examples": ["system.listeners[0].port"]},
            "message": {"type": "string"},
            "hint": _NULLABLE_STR,
            "file": _NULLABLE_STR,
            "line": {"type": ["integer", "null"]},
            "column": {"type": ["integer", "null"]},
            "related": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ChangeCounts": {
        "type": "object",
        "required": ["add", "change", "remove", "loosening"],
        "properties": {k: {"type": "integer", "minimum": 0} for k in ("add", "change", "remove", "loosening")},
    },
    "RunningConfig": {
        "type": "object",
        "required": ["version", "config", "hash", "commit", "applied_at", "source", "last_applied"],
        "properties": {
            "version": {"type": "integer", "description": "Increases by one on every swap"},
            "config": {"type": "object", "description": "The running config, canonical JSON"},
            "hash": {"type": "string", "description": "SHA-256 of the canonical JSON (also the ETag)"},
            "commit": _NULLABLE_STR,
            "applied_at": {"type": "number", "description": "Unix time"},
            "source": {"type": "string", "examples": ["api", "file-watch", "start"]},
            "last_applied": {
                "type": ["object", "null"],
                "description": "The config the last reviewed change (an apply, or the first start) set, "
                "when it is not what runs (drift); else null",
            },
            "dirty": {"type": "boolean", "description": "The config's files had uncommitted changes"},
            "who": {"type": "string", "description": "A token id (api), or file-watch, or start"},
            "applied": {
                "type": ["object", "null"],
                "description": "The record of the last reviewed change: version, hash, source, commit, dirty, "
                "who, at, reason",
            },
        },
    },
    "Reload": {
        "type": "object",
        "required": ["at", "ok", "source", "error"],
        "properties": {
            "at": {"type": "number"},
            "ok": {"type": "boolean"},
            "source": {"type": "string"},
            "error": _NULLABLE_STR,
        },
    },
    "Status": {
        "type": "object",
        "required": ["version", "last_reload", "uptime_s", "queue", "listeners"],
        "properties": {
            "version": {"type": "integer"},
            "last_reload": {"oneOf": [_ref("Reload"), {"type": "null"}]},
            "uptime_s": {"type": "number"},
            "queue": {"type": "object"},
            "listeners": {"type": "array", "items": {"type": "object"}},
            "held": {
                "type": ["object", "null"],
                "description": "A config change refused at start (source, reason, hint); the last applied "
                "config serves meanwhile",
            },
            "overrides": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Where this process binds instead of the config (`serve --listen`), by listener "
                "or endpoint name: `listeners` shows the config's addresses",
            },
            "destinations": {
                "type": "array",
                "items": _ref("Destination"),
                "description": "The destinations the delivery scheduler tracks (in memory): dead ones first, then "
                "the busiest",
            },
        },
    },
    "Destination": {
        "type": "object",
        "required": ["name", "state", "concurrency", "limit", "busy", "waiting", "failures_in_a_row", "dead_until"],
        "properties": {
            "name": {"type": "string", "description": "`[host]:port` of a route's next hop, or a recipient domain"},
            "state": {
                "enum": ["alive", "dead", "retry", "probing"],
                "description": "dead: no delivery starts before `dead_until`; retry: the next delivery probes it",
            },
            "concurrency": {"type": "integer", "description": "Parallel deliveries it may have now"},
            "limit": {"type": "integer"},
            "busy": {"type": "integer", "description": "Deliveries in progress"},
            "waiting": {"type": "integer", "description": "Jobs waiting in memory for a slot"},
            "failures_in_a_row": {"type": "integer", "description": "Connection-level failures in a row"},
            "dead_until": {"type": ["number", "null"]},
            "dead_since": {"type": ["number", "null"]},
            "last_failure": _NULLABLE_STR,
            "last_failure_at": {"type": ["number", "null"]},
            "sessions": {"type": "integer"},
            "connection_failures": {"type": "integer"},
            "deferred": {"type": "integer", "description": "Recipients deferred after an attempt"},
            "postponed": {"type": "integer", "description": "Recipients deferred without one (dead)"},
        },
    },
    "PlanRequest": {
        "type": "object",
        "required": ["config"],
        "additionalProperties": False,
        "properties": {"config": {"type": "object", "description": "The desired config, canonical JSON"}},
    },
    "PlanResult": {
        "type": "object",
        "required": ["ok", "base_version", "plan", "summary", "error", "detail", "diagnostics"],
        "properties": {
            "ok": {"type": "boolean"},
            "base_version": {"type": "integer"},
            "plan": {"type": ["object", "null"], "description": "The plan engine's JSON"},
            "summary": _ref("ChangeCounts"),
            "error": _NULLABLE_STR,
            "detail": _NULLABLE_STR,
            "diagnostics": {"type": "array", "items": _ref("Diagnostic")},
        },
    },
    "ApplyRequest": {
        "type": "object",
        "required": ["config", "base_version"],
        "additionalProperties": False,
        "properties": {
            "config": {"type": "object"},
            "base_version": {"type": "integer", "minimum": 0},
            "commit": _NULLABLE_STR,
            "reason": {"type": ["string", "null"], "description": "Required with allow_downgrade"},
            "allow_downgrade": {"type": "boolean", "default": False},
            "plan_hash": _NULLABLE_STR,
            "dirty": {"type": "boolean", "default": False},
        },
    },
    "ApplyResult": {
        "type": "object",
        "required": ["ok", "version", "previous_version", "changed", "error", "detail", "diagnostics", "summary"],
        "properties": {
            "ok": {"type": "boolean"},
            "version": {"type": "integer"},
            "previous_version": {"type": "integer"},
            "changed": {"type": "boolean", "description": "False: the config was already running (a no-op)"},
            "error": _NULLABLE_STR,
            "detail": _NULLABLE_STR,
            "diagnostics": {"type": "array", "items": _ref("Diagnostic")},
            "summary": _ref("ChangeCounts"),
            "audit_error": {"type": "string", "description": "Present when the audit record could not be written"},
        },
    },
    "AuditRecord": {
        "type": "object",
        "required": ["at", "who", "from_version", "to_version", "result"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "who": {"type": "string", "pattern": "^(token:[0-9a-f]{8}|file-watch|start)$"},
            "from_version": {"type": "integer"},
            "to_version": {"type": "integer"},
            "result": {"enum": ["applied", "unchanged", "refused", "failed"]},
            "commit": _NULLABLE_STR,
            "hash": {"type": ["string", "null"], "description": "Hash of the config running after the attempt"},
            "reason": _NULLABLE_STR,
            "allow_downgrade": {"type": "boolean"},
            "summary": _ref("ChangeCounts"),
            "error": _NULLABLE_STR,
            "detail": _NULLABLE_STR,
            "source": {"enum": ["api", "file-watch", "start"]},
            "dirty": {"type": "boolean", "description": "The config's files had uncommitted changes"},
        },
    },
}

_PATHS: dict[str, dict] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness; no authentication",
            "security": [],
            "responses": {"200": _json({"type": "object"}, 'The API is up: {"status": "ok"}')},
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_AUTH_ERRORS},
        }
    },
    "/v1/config": {
        "get": {
            "operationId": "getConfig",
            "summary": "The running config, its version, hash and git commit",
            "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
            "responses": {
                "200": _json(
                    _ref("RunningConfig"),
                    "The running config",
                    {"ETag": {"description": "The config hash, quoted", "schema": {"type": "string"}}},
                ),
                "304": {"description": "If-None-Match names the running config"},
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/plan": {
        "post": {
            "operationId": "plan",
            "summary": "Plan a desired config against the running one",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PlanRequest")}}},
            "responses": {
                "200": _json(_ref("PlanResult"), "The plan, with the base version it was computed against"),
                "400": _err('The body is not {"config": {...}}'),
                **_AUTH_ERRORS,
                "413": _err("The body is over the size limit"),
                "422": _err("The desired config is invalid (`invalid`, with diagnostics)"),
            },
        }
    },
    "/v1/apply": {
        "post": {
            "operationId": "apply",
            "summary": "Apply a desired config planned against base_version (one apply at a time)",
            "parameters": [
                {
                    "name": "If-Match",
                    "in": "header",
                    "description": "Optional: the ETag of GET /v1/config; refused with 412 if the config moved",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ApplyRequest")}}},
            "responses": {
                "200": _json(_ref("ApplyResult"), "Applied, or already running (changed: false)"),
                "400": _err("Malformed request (or allow_downgrade without a reason)"),
                "401": _AUTH_ERRORS["401"],
                "403": _err("Wrong token (`forbidden`), or a loosening without allow_downgrade (`downgrade_refused`)"),
                "409": _err(
                    "base_version is not the running version (`stale_base`) or the saved plan no longer matches (`plan_mismatch`)"
                ),
                "412": _err("If-Match does not name the running config (`precondition_failed`)"),
                "413": _err("The body is over the size limit"),
                "422": _err("The desired config is invalid (`invalid`, with diagnostics)"),
                "500": _err("The new config could not be built or started; the old one still serves (`apply_failed`)"),
            },
        }
    },
    "/v1/status": {
        "get": {
            "operationId": "status",
            "summary": "Running version, last reload result and error, uptime, queue, listeners",
            "responses": {"200": _json(_ref("Status"), "The relay's status"), **_AUTH_ERRORS},
        }
    },
    "/v1/audit": {
        "get": {
            "operationId": "audit",
            "summary": "The last records of the audit log, oldest first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                },
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["records"],
                        "properties": {"records": {"type": "array", "items": _ref("AuditRecord")}},
                    },
                    "Audit records",
                ),
                "400": _err("Bad `limit` or `since`"),
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/portal/audit": {
        "get": {
            "operationId": "portalAudit",
            "summary": "The secure portal's audit events (opens, codes sent, logins, failures, key releases), oldest first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                },
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "address", "in": "query", "schema": {"type": "string", "maxLength": 254}},
                {"name": "event", "in": "query", "schema": {"type": "string", "maxLength": 40}},
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {
                            "events": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["at", "event"],
                                    "properties": {
                                        "at": {"type": "number"},
                                        "event": {"type": "string"},
                                        "address": {"type": ["string", "null"]},
                                        "message_id": {"type": ["string", "null"]},
                                        "ip": {"type": ["string", "null"]},
                                        "detail": {"type": ["string", "null"]},
                                    },
                                },
                            }
                        },
                    },
                    "Portal audit events",
                ),
                "400": _err("Bad `limit` or `since`"),
                "404": _err("No secure portal runs in this relay"),
                **_AUTH_ERRORS,
            },
        }
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "sealrelay admin API",
        "version": "1",
        "description": "Read and change the configuration of one sealrelay node. See docs/admin-api.md.",
    },
    "servers": [{"url": "http://127.0.0.1:8025"}],
    "security": [{"bearer": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The token in <data_dir>/admin.token"}
        },
        "schemas": _SCHEMAS,
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    return copy.deepcopy(_DOCUMENT)
