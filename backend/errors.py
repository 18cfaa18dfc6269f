"""Errors a client can act on, raised by services and routes alike.

Flask-free on purpose: the services raise these and must not import the web layer; the web
layer (backend/web/errors.py) turns them into the public contract's JSON body
`{"error": {"code", "message"}}`."""

from __future__ import annotations


class ApiError(Exception):
    """An error a client can act on: a status, a stable snake_case code and a message."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict | None = None, **extra
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After on a 429
        self.extra = extra


def error_body(code: str, message: str, **extra) -> dict:
    err = {"code": code, "message": message}
    err.update(extra)
    return {"error": err}
