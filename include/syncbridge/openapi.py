"""The OpenAPI 3.1 description served at /openapi.json."""

from __future__ import annotations

from typing import Any

from .faults import API_ROUTES, FAULT_NAMES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


_ERR = _ref("Error")
_COMMON_ERRORS = {
    "400": _resp("Malformed JSON or invalid fields", _ERR),
    "413": _resp("Request body too large", _ERR),
    "503": _resp("Storage unavailable", _ERR),
}
_AUTHED_ERRORS = {
    **_COMMON_ERRORS,
    "401": _resp("Missing, invalid or expired access token", _ERR),
    "404": _resp("Session not found (or not the caller's)", _ERR),
}
_SESSION_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,127}$"},
}
_BEARER = [{"bearer": []}]
_STR = {"type": "string"}
_INT = {"type": "integer"}
_TIME = {"type": "string", "format": "date-time"}


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def openapi_spec(release: str) -> dict[str, Any]:
    obj = {"type": "object", "additionalProperties": True}
    nullable_str = {"type": ["string", "null"]}
    schemas = {
        "Error": _object(("error",), error=_STR),
        "User": _object(id=_INT, email=_STR, name=_STR, createdAt=_TIME),
        "Tokens": _object(
            ("accessToken", "refreshToken"),
            accessToken=_STR,
            refreshToken=_STR,
            tokenType={"type": "string", "const": "Bearer"},
            expiresIn=_INT,
            user=_ref("User"),
        ),
        "Session": _object(
            sessionId=_STR,
            state=obj,
            version={"type": "integer", "minimum": 1},
            activeDeviceId=nullable_str,
            updatedAt=_TIME,
        ),
        "Device": _object(deviceId=_STR, connected={"type": "boolean"}, lastSeen=_TIME),
        "Faults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **{name: {"type": "number", "minimum": 0} for name in FAULT_NAMES},
                "routes": {"type": "array", "items": {"type": "string", "enum": list(API_ROUTES)}},
                "tail_routes": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(API_ROUTES)},
                },
            },
        },
    }
    paths: dict[str, Any] = {
        "/api/v1/auth/register": {
            "post": {
                "summary": "Register a user",
                "requestBody": _json_body(
                    _object(
                        ("email", "password"),
                        email={"type": "string", "maxLength": 254},
                        password={"type": "string", "minLength": 8, "maxLength": 256},
                        name={"type": "string", "maxLength": 200},
                    )
                ),
                "responses": {
                    "201": _resp("Registered", _ref("Tokens")),
                    "409": _resp("Email already registered", _ERR),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/auth/login": {
            "post": {
                "summary": "Log in",
                "requestBody": _json_body(
                    _object(("email", "password"), email=_STR, password=_STR)
                ),
                "responses": {
                    "200": _resp("Logged in", _ref("Tokens")),
                    "401": _resp("Bad credentials", _ERR),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/auth/refresh": {
            "post": {
                "summary": "Exchange a refresh token (single use: rotates) for new tokens",
                "requestBody": _json_body(_object(("refreshToken",), refreshToken=_STR)),
                "responses": {
                    "200": _resp("New tokens", _ref("Tokens")),
                    "401": _resp("Invalid, expired or already used refresh token", _ERR),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/sessions": {
            "post": {
                "summary": "Create a session (the client chooses its id)",
                "security": _BEARER,
                "requestBody": _json_body(_object(("sessionId",), sessionId=_STR, state=obj)),
                "responses": {
                    "201": _resp("Created", _ref("Session")),
                    "409": _resp("The caller already has a session with this id", _ERR),
                    **_AUTHED_ERRORS,
                },
            }
        },
        "/api/v1/sessions/{id}": {
            "parameters": [_SESSION_ID_PARAM],
            "get": {
                "summary": "Get a session",
                "security": _BEARER,
                "responses": {"200": _resp("The session", _ref("Session")), **_AUTHED_ERRORS},
            },
            "put": {
                "summary": "Replace the session's state (version + 1)",
                "security": _BEARER,
                "requestBody": _json_body(_object(("state",), state=obj)),
                "responses": {
                    "200": _resp("Updated", _object(sessionId=_STR, version=_INT, updatedAt=_STR)),
                    **_AUTHED_ERRORS,
                },
            },
        },
        "/api/v1/sessions/{id}/snapshot": {
            "parameters": [_SESSION_ID_PARAM],
            "post": {
                "summary": "Store a snapshot of a state",
                "security": _BEARER,
                "requestBody": _json_body(_object(("state",), state=obj, metadata=obj)),
                "responses": {
                    "201": _resp(
                        "Stored",
                        _object(snapshotId=_STR, sessionId=_STR, version=_INT, createdAt=_STR),
                    ),
                    **_AUTHED_ERRORS,
                },
            },
        },
        "/api/v1/sessions/{id}/devices": {
            "parameters": [_SESSION_ID_PARAM],
            "get": {
                "summary": "The session's devices",
                "security": _BEARER,
                "responses": {
                    "200": _resp(
                        "Devices",
                        _object(
                            sessionId=_STR,
                            activeDeviceId=nullable_str,
                            devices={"type": "array", "items": _ref("Device")},
                        ),
                    ),
                    **_AUTHED_ERRORS,
                },
            },
        },
        "/api/v1/sessions/{id}/handoff": {
            "parameters": [_SESSION_ID_PARAM],
            "post": {
                "summary": "Hand the session over to another device",
                "security": _BEARER,
                "requestBody": _json_body(
                    _object(
                        ("fromDeviceId", "toDeviceId", "handoffToken"),
                        fromDeviceId=_STR,
                        toDeviceId=_STR,
                        handoffToken={"type": "string", "minLength": 1},
                    )
                ),
                "responses": {
                    "200": _resp("Handed over", _object(sessionId=_STR, activeDeviceId=_STR)),
                    "409": _resp("fromDeviceId is not the active device", _ERR),
                    **_AUTHED_ERRORS,
                },
            },
        },
        "/ws": {
            "get": {
                "summary": "WebSocket: auth, heartbeat, state_update (see the service docs)",
                "responses": {"101": _resp("Switching protocols")},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _resp("Alive")}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: storage reachable",
                "responses": {"200": _resp("Ready"), "503": _resp("Storage unreachable", _ERR)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}},
            }
        },
        "/admin/faults": {
            "get": {
                "summary": "The injected faults",
                "security": [{"admin": []}],
                "responses": {"200": _resp("Current faults")},
            },
            "put": {
                "summary": "Replace the injected faults ({} clears them)",
                "security": [{"admin": []}],
                "requestBody": _json_body(_ref("Faults")),
                "responses": {
                    "200": _resp("Faults set"),
                    "400": _resp("Invalid fault set", _ERR),
                    "401": _resp("Bad admin token", _ERR),
                    "403": _resp("Admin API disabled", _ERR),
                },
            },
        },
        "/admin/release": {
            "get": {
                "summary": "The current release and the release history (current last)",
                "security": [{"admin": []}],
                "responses": {
                    "200": _resp(
                        "Releases",
                        _object(
                            release=_STR,
                            history={"type": "array", "items": obj},
                            rolledBack={"type": "array", "items": obj},
                        ),
                    )
                },
            }
        },
        "/admin/rollback": {
            "post": {
                "summary": "Restore the previous release (its id and its fault set)",
                "security": [{"admin": []}],
                "responses": {
                    "200": _resp("Rolled back"),
                    "409": _resp("No previous release", _ERR),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "HarmonyFlow SyncBridge (loadgate reference service)",
            "version": release,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "admin": {"type": "http", "scheme": "bearer"},
            },
        },
    }
