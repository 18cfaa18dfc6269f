"""JSON-schema validation that names the offending path: `events[3].ts: ...`.

The API's request checks (backend/web/openapi.py) and the event batch
(backend/services/events.py), which rejects bad items one by one, read errors the same way."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from backend.core import documents


def json_path(parts, root: str = "") -> str:
    """`events[3].ts` style path of a JSON location, under an optional root name."""
    return documents.json_path(parts, root) or "body"


_validators: dict[int, Draft202012Validator] = {}


MAX_ERROR_CHARS = 300  # an error message names the problem; it does not echo a huge value


def first_error(schema: dict, value: Any, root: str = "") -> str | None:
    """The most relevant validation error, as 'path: message', or None if valid."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    message = err.message  # it quotes the offending value, which may be megabytes long
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return f"{json_path(err.absolute_path, root)}: {message}"


def unstorable_value(value: Any, root: str = "") -> str | None:
    """'path: why' for the first value that cannot be stored faithfully on every database
    (U+0000, an unpaired surrogate such as `"\\ud800"`, NaN, Infinity), or None."""
    return documents.unstorable(value, root)
