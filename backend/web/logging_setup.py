"""One log line per event: the one place logging is set up for the web app, `serve` and
`worker` (docs/operations.md).

`HUILIU_LOG_FORMAT` chooses the line:
- `json`: one JSON object per line, `{"time", "level", "logger", "message", "pid"}`, with a
  traceback folded into `"exc"` (its newlines escaped), so a log shipper reads each event as
  one record and a message cannot start a line of its own;
- `text`: `time level logger message`, for a person at a terminal.

`serve` and `worker` default to json; other commands and the tests default to text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

ENV = "HUILIU_LOG_FORMAT"
FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# At DEBUG these log full URLs and SQL parameters: app secret, login codes, access tokens.
_LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}
QUIET = {"urllib3": logging.INFO, "peewee": logging.INFO, "MESA": logging.WARNING}


class JsonFormatter(logging.Formatter):
    """A record as one JSON line; time in UTC, ISO 8601 with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's fields, its message formatted, its traceback (if any) in one field."""
        when = datetime.fromtimestamp(record.created, UTC)
        line = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Chinese stays readable; the few non-ASCII characters that some readers take for a
        # line break are escaped like the control characters json.dumps escapes already.
        return json.dumps(line, ensure_ascii=False, default=str).translate(_LINE_BREAKS)


def chosen(default: str = "text") -> str:
    """The format HUILIU_LOG_FORMAT names, else `default`; an unknown name is an error."""
    value = (os.environ.get(ENV) or default).strip().lower()
    if value not in FORMATS:
        raise ValueError(f"{ENV} must be json or text, not {value!r}")
    return value


def formatter(kind: str) -> logging.Formatter:
    """The formatter of a format name."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def install(default: str = "text") -> str:
    """Log INFO and above to stderr in the chosen format; returns the format.

    Installing again replaces the handler this made before (serve and worker install json
    after the app factory installed the default). A root logger that already has handlers of
    someone else's (pytest's capture) is left alone, as logging.basicConfig would.
    """
    kind = chosen(default)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "huiliu", False)]
    if ours or not root.handlers:
        for handler in ours:
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.huiliu = True
        handler.setFormatter(formatter(kind))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)
    return kind


def default_to_json() -> str:
    """`serve` and `worker`: json unless HUILIU_LOG_FORMAT says otherwise, for this process and
    the processes it starts (gunicorn's workers build their app, and log, after forking)."""
    os.environ.setdefault(ENV, "json")
    return install()


def format_handlers(logger: logging.Logger) -> None:
    """Give a logger's own handlers (gunicorn's error log) the chosen format."""
    kind = chosen()
    if kind == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
