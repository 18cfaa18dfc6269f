"""Request validation and the OpenAPI document, from one set of JSON Schemas.

Each route declares its schemas with @documented; the same schema that validates a request
body is the one /openapi.json publishes, so the document cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, request

from backend.core import documents
from backend.core.validation import first_error, unstorable_value
from backend.errors import ApiError

# What any route that reads a body can answer besides its own errors.
BODY_ERRORS = frozenset({400, 408, 413})
RETRY_AFTER = {
    "description": "seconds until the limit lets this client try again (sent with "
    "rate_limited; WeChat's wechat_rate_limited has none: retry in a minute)",
    "schema": {"type": "integer", "minimum": 0},
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


@dataclass
class RouteDoc:
    """What a route tells its clients, kept on the view so the document cannot drift from the
    routes."""

    summary: str
    request: dict | None = None
    response: dict | None = None
    status: int = 200
    auth: str | None = None  # "bearer" | "api_key" | None
    query: dict[str, dict] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    also: dict[int, str] = field(default_factory=dict)  # other success statuses: when


def documented(
    summary: str,
    *,
    request: dict | None = None,
    response: dict | None = None,
    status: int = 200,
    auth: str | None = None,
    query: dict[str, dict] | None = None,
    errors: tuple[int, ...] = (),
    also: dict[int, str] | None = None,
):
    """Attach a RouteDoc to a view function (read back by openapi()). `also`: other success
    statuses with the same body, each with when it is given."""

    def mark(view):
        """Keep the route's description on the view itself."""
        view.route_doc = RouteDoc(
            summary, request, response, status, auth, query or {}, errors, also or {}
        )
        return view

    return mark


def read_json() -> Any:
    """The request body as JSON, parsed within documents' limits (the size is werkzeug's
    max_content_length, a 413), or a 400 naming what is wrong with it.

    Strings that cannot be stored are left to the caller: `validated` refuses the body, an
    event batch rejects only the events that carry them.
    """
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "empty_body", "request body is empty; send a JSON object")
    try:
        return documents.load_json(raw, max_bytes=len(raw), check_strings=False)
    except documents.DocumentError as exc:
        if exc.code == documents.INVALID_JSON:
            raise ApiError(400, "malformed_json", f"request body is {exc.problem}") from None
        raise ApiError(400, exc.code, f"request body: {exc}") from None


def validated(schema: dict) -> Any:
    """Read the body and validate it whole; 400 `invalid_request` naming the field."""
    body = read_json()
    problem = unstorable_value(body) or first_error(schema, body)
    if problem:
        raise ApiError(400, "invalid_request", problem)
    return body


def _path_template(rule: str) -> tuple[str, list[dict]]:
    """A Flask rule (`/policies/<name>`) as an OpenAPI path (`/policies/{name}`) with its
    parameters."""
    params = []
    out = rule
    for arg in sorted({a for a in rule.split("<")[1:]}):
        inner = arg.split(">")[0]
        conv, _, name = inner.rpartition(":")
        kind = "integer" if conv in ("int", "id") else "string"
        params.append({"name": name, "in": "path", "required": True, "schema": {"type": kind}})
        out = out.replace(f"<{inner}>", "{" + name + "}")
    return out, params


def openapi(app: Flask) -> dict:
    """The OpenAPI 3.1 document of every routed view (undocumented views are listed too).
    The dashboard's HTML pages are for people, not clients, and are not part of it."""
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue
        view = app.view_functions[rule.endpoint]
        doc: RouteDoc | None = getattr(view, "route_doc", None)
        path, params = _path_template(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {"operationId": f"{rule.endpoint}.{method.lower()}"}
            if doc is None:
                op["summary"] = "UNDOCUMENTED"
            else:
                op["summary"] = doc.summary
                parameters = list(params)
                parameters += [
                    {"name": n, "in": "query", "required": False, "schema": s}
                    for n, s in doc.query.items()
                ]
                if parameters:
                    op["parameters"] = parameters
                if doc.request is not None:
                    op["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": doc.request}},
                    }
                responses: dict[str, Any] = {
                    str(doc.status): {
                        "description": "success",
                        "content": {"application/json": {"schema": doc.response or {}}},
                    }
                }
                for code, when in doc.also.items():
                    responses[str(code)] = {
                        "description": when,
                        "content": {"application/json": {"schema": doc.response or {}}},
                    }
                codes = set(doc.errors)
                if doc.request:
                    # 400 a body that cannot be read (or ends early: incomplete_body), 413
                    # one over the route's limit, 408 one that stops arriving (`serve`'s guard)
                    codes |= BODY_ERRORS
                if doc.auth:
                    codes.add(401)
                for code in sorted(codes):
                    responses[str(code)] = {
                        "description": "error",
                        "content": {"application/json": {"schema": ERROR_SCHEMA}},
                    }
                    if code == 429:
                        responses[str(code)]["headers"] = {"Retry-After": RETRY_AFTER}
                op["responses"] = responses
                if doc.auth == "bearer":
                    op["security"] = [{"bearer": []}]
                elif doc.auth == "api_key":
                    op["security"] = [{"apiKey": []}]
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Huiliu (回流) API",
            "version": "1",
            "description": "Re-engagement backend for WeChat mini-programs.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            }
        },
    }
