"""Every error leaves as JSON `{"error": {"code", "message"}}` (the public contract).

The handlers turn ApiError (backend/errors.py), werkzeug's HTTP errors and anything
unexpected into that body."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.errors import ApiError, error_body

log = logging.getLogger(__name__)


def _http_code(exc: HTTPException) -> str:
    """werkzeug's own errors (404 on an unknown path, 405, 413...) in the contract's codes."""
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
    }.get(exc.code or 500, "http_error")


def _too_large_message(exc: HTTPException) -> str:
    """Name the limit that applied to this request: a route may allow more than the app-wide
    MAX_CONTENT_LENGTH (the historical import allows 16 MiB), and a form's field or part
    limits are not the body limit at all."""
    limit = request.max_content_length  # this request's own limit when its route set one
    length = request.content_length
    if limit is not None and (length is None or length > limit):
        return f"request body exceeds the limit of {limit} bytes for this endpoint"
    return exc.description or "request entity too large"


def register(app: Flask) -> None:
    """Every error, ours or werkzeug's or a bug, leaves in the one JSON shape clients parse."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError):
        """The services' refusals (ApiError) with their status, code, extras and headers."""
        return jsonify(error_body(exc.code, exc.message, **exc.extra)), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        """werkzeug's errors in the contract's shape; a 405 still says which methods are allowed."""
        message = exc.description or exc.name
        if exc.code == 413:
            message = _too_large_message(exc)
        resp = jsonify(error_body(_http_code(exc), message))
        if exc.code == 405 and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp, exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        """A bug: logged with its traceback, answered without one (nothing internal leaks)."""
        log.exception("unhandled error")
        return jsonify(error_body("internal_error", "internal server error")), 500
