"""The production WSGI server: gunicorn, embedded so `python app.py serve` is all it takes.

Three guards beyond gunicorn's defaults:
- A request watchdog. gthread workers answer gunicorn's heartbeat from their main thread, so
  a request thread that never returns (a runaway parse, a hung call) leaves the worker "alive"
  for ever and `timeout` never recycles it. A watchdog thread in each worker exits it, logging
  the request, once the application has worked on one longer than `HUILIU_REQUEST_TIMEOUT_S`
  (default 60 s); the master then forks a fresh worker. Only the application's own time
  counts: `guard` reads the whole body before it starts the clock and stops it while the
  response is written, because a client that is slow to send or to read must not make the
  worker (and every other request in it) die. It reads no more than the request's own route
  accepts: a larger Content-Length is a 413 unread, a chunked body is cut off at the limit.
- A client timeout. gthread reads headers and bodies from blocking sockets with no timeout, so
  a client that sends half a request and waits held a thread for ever. Every connection gets a
  kernel read and write timeout (`HUILIU_CLIENT_TIMEOUT_S`, default 30 s): a stalled body is
  a 408 for that request alone, stalled headers or an unread response close that connection.
- An access log that cannot be forged: gunicorn logs the decoded path, so `%0A` in a URL would
  write a line of the attacker's choosing. Control characters, quotes and backslashes in
  logged values are escaped.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from backend.services import telemetry
from backend.web import logging_setup
from backend.web.admin.routes import MAX_IMPORT_BODY
from backend.web.app import create_web_app

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 60.0
DEFAULT_CLIENT_TIMEOUT_S = 30.0
# The one route that accepts more than MAX_CONTENT_LENGTH (backend/web/admin/routes.py).
IMPORT_PATH = "/admin/v1/events/import"
# Exit code of a worker the watchdog ended (not gunicorn's 3 or 4, which halt the master).
WATCHDOG_EXIT = 70

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')


def escape_for_log(value: str) -> str:
    """`value` with control characters, quotes and backslashes as \\xNN: one log line each."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


class SafeAccessLogger(Logger):
    """gunicorn's logger with every logged string escaped (paths, query, headers)."""

    def atoms(self, resp, req, environ, request_time):
        """gunicorn's log fields, each string escaped so a request cannot write a log line of its
        own."""
        atoms = super().atoms(resp, req, environ, request_time)
        return {k: escape_for_log(v) if isinstance(v, str) else v for k, v in atoms.items()}

    def setup(self, cfg) -> None:
        """gunicorn's own handlers, its error log in HUILIU_LOG_FORMAT like every other log.
        The access line stays gunicorn's escaped text (one line per request, unforgeable):
        the latency histogram in /metrics carries the same requests by route."""
        super().setup(cfg)
        logging_setup.format_handlers(self.error_log)


def _seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment, or the default when unset, unreadable
    or not positive."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = default
    return value if value > 0 else default


def request_timeout_s() -> float:
    """How long the application may work on one request before the watchdog recycles its worker."""
    return _seconds("HUILIU_REQUEST_TIMEOUT_S", DEFAULT_REQUEST_TIMEOUT_S)


def client_timeout_s() -> float:
    """How long a client may stall sending or reading before its connection is given up."""
    return _seconds("HUILIU_CLIENT_TIMEOUT_S", DEFAULT_CLIENT_TIMEOUT_S)


class RequestClock:
    """When each of a worker's request threads handed its current request to the application
    (`guard` starts it after the body is read and stops it while the response is written).

    Durations only, on the monotonic clock: a watchdog measures how long a request has run,
    never the time of day (that comes from backend.core.clock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, str]] = {}

    def start(self, what: str, now: float | None = None) -> None:
        """Mark this thread's request as handed to the application (now, or `now` in tests)."""
        with self._lock:
            self._running[threading.get_ident()] = (
                time.monotonic() if now is None else now,
                what,
            )

    def stop(self) -> None:
        """This thread's request is out of the application's hands (done, or its response being
        written)."""
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def overdue(self, timeout_s: float, now: float | None = None) -> list[tuple[float, str]]:
        """(seconds running, request) of every request older than `timeout_s`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return [(now - t, what) for t, what in self._running.values() if now - t > timeout_s]


def watch(clock: RequestClock, timeout_s: float, on_overdue, poll_s: float | None = None):
    """Poll `clock` until a request is overdue, then call `on_overdue(seconds, request)` once
    for the oldest (in a worker that exits the process; returns if it does not)."""
    poll = poll_s if poll_s is not None else max(0.05, min(1.0, timeout_s / 4))
    while True:
        late = clock.overdue(timeout_s)
        if late:
            on_overdue(*max(late))
            return
        time.sleep(poll)


class _BodyTimeout(Exception):
    """The client stopped sending its body for longer than the client timeout."""


class _BodyTooLarge(Exception):
    """The body is over the limit of the route it is for (said by Content-Length, or a
    chunked body that went past it)."""


def _read_body(environ: dict, max_bytes: int, spool_bytes: int) -> io.IOBase | None:
    """The request body, read to its end, as a file to hand the application in place of the
    socket; None to leave the input as is.

    `max_bytes` is the limit of the route the request is for: a body the headers say is larger
    is refused unread, and a chunked one is cut off one byte past it (`_BodyTooLarge` both
    times), so a client cannot make a worker read and store more than that route accepts.
    Above `spool_bytes` the body goes to a temporary file, so a client cannot make a worker
    hold many large bodies in memory.
    """
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if length.isdigit():
        want = int(length)
        if want > max_bytes:
            raise _BodyTooLarge
        if want == 0:
            return None
    elif chunked:
        want = max_bytes + 1
    else:
        return None
    body = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # noqa: SIM115 (returned)
    got = 0
    try:
        while got < want:
            chunk = stream.read(min(want - got, 1024 * 1024))
            if not chunk:
                break
            body.write(chunk)
            got += len(chunk)
    except (BlockingIOError, TimeoutError):  # the socket's read timeout (SO_RCVTIMEO)
        body.close()
        raise _BodyTimeout from None
    except BaseException:
        body.close()
        raise
    if length.isdigit() and got < want:
        body.close()
        raise ConnectionAbortedError("the client closed the connection mid-body")
    if chunked:
        if got > max_bytes:
            body.close()
            raise _BodyTooLarge
        # Now of known length: werkzeug reads it as usual.
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["CONTENT_LENGTH"] = str(got)
    body.seek(0)
    return body


def _error(start_response, status: str, code: str, message: str) -> list[bytes]:
    """A JSON error answered by the guard itself, before the app saw the request; the connection
    closes."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    return [body]


class _Timed:
    """The application's response iterable, with the clock running only while the
    application produces it (not while gunicorn writes it to a slow client)."""

    def __init__(self, result: Iterable[bytes], clock: RequestClock, what: str, body) -> None:
        self._result = result
        self._iter = iter(result)
        self._clock = clock
        self._what = what
        self._body = body

    def __iter__(self):
        """The response is its own iterator, so each chunk it yields is timed."""
        return self

    def __next__(self) -> bytes:
        """The next chunk, timed: producing it is the application's work."""
        self._clock.start(self._what)
        try:
            return next(self._iter)
        finally:
            self._clock.stop()

    def close(self) -> None:
        """Close the response (timed: closing may run application code) and the spooled body."""
        try:
            if hasattr(self._result, "close"):
                self._clock.start(self._what)
                try:
                    self._result.close()
                finally:
                    self._clock.stop()
        finally:
            if self._body is not None:
                self._body.close()


def guard(
    app: Callable,
    clock: RequestClock,
    max_body: int,
    spool_bytes: int,
    route_limits: dict[str, int] | None = None,
) -> Callable:
    """WSGI middleware: read the whole body first, then time the application's work.

    `max_body` is every route's body limit but those in `route_limits` (path: limit): a body
    over its route's limit is a 413 before any of it is read (chunked: before more is).
    """
    limits = route_limits or {}

    def guarded(environ: dict, start_response):
        """The WSGI entry each request comes through: body read (or refused), then the app timed."""
        what = f"{environ.get('REQUEST_METHOD', '')} {escape_for_log(environ.get('PATH_INFO', ''))}"
        limit = limits.get(environ.get("PATH_INFO", ""), max_body)
        try:
            body = _read_body(environ, limit, spool_bytes)
        except _BodyTooLarge:
            return _error(
                start_response,
                "413 Request Entity Too Large",
                "payload_too_large",
                f"request body exceeds the limit of {limit} bytes for this endpoint",
            )
        except _BodyTimeout:
            return _error(
                start_response,
                "408 Request Timeout",
                "request_timeout",
                f"the request body stopped arriving for {client_timeout_s():g} s",
            )
        except ConnectionAbortedError as exc:
            return _error(start_response, "400 Bad Request", "incomplete_body", str(exc))
        if body is not None:
            environ["wsgi.input"] = body
        clock.start(what)
        try:
            result = app(environ, start_response)
        except BaseException:
            if body is not None:
                body.close()
            raise
        finally:
            clock.stop()
        return _Timed(result, clock, what, body)

    return guarded


def _recycle(worker, seconds: float, what: str) -> None:
    """The watchdog's verdict: log the runaway request, flush the log and exit so the master
    forks a fresh worker."""
    worker.log.critical(
        "request %s has run %.1f s, longer than HUILIU_REQUEST_TIMEOUT_S; recycling worker %s",
        what,
        seconds,
        os.getpid(),
    )
    for handler in logging.getLogger("gunicorn.error").handlers:
        handler.flush()
    os._exit(WATCHDOG_EXIT)


def _post_worker_init(worker) -> None:
    """gunicorn's hook in each new worker: start that worker's watchdog over its request clock."""
    # worker.app is this process's _Gunicorn, whose load() built the guarded app and its clock.
    requests = worker.app.requests
    timeout_s = request_timeout_s()
    threading.Thread(
        target=watch,
        args=(requests, timeout_s, lambda s, w: _recycle(worker, s, w)),
        name="huiliu-request-watchdog",
        daemon=True,
    ).start()


def _child_exit(_server, worker) -> None:
    """gunicorn's hook in the master when a worker ended: its live-only metrics go
    (prometheus_client's multiprocess bookkeeping; its counts stay in the sums)."""
    telemetry.process_ended(worker.pid)


def _set_client_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel read and write timeouts: gthread switches its sockets between blocking and
    non-blocking, which resets Python's own timeout but not these."""
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        sock.setsockopt(socket.SOL_SOCKET, option, timeval)


def _worker_class():
    """gthread with a client timeout on every connection; built when `serve` starts, so the
    timeout is the environment's then."""
    from gunicorn.workers.gthread import ThreadWorker

    class Worker(ThreadWorker):
        """gthread, with a client timeout on every connection before any of it is read."""

        client_timeout = client_timeout_s()

        def handle(self, conn):
            """Set the connection's kernel timeouts before gthread reads the first byte of it."""
            with contextlib.suppress(OSError):  # closed already: super().handle() finds out
                _set_client_timeout(conn.sock, self.client_timeout)
            return super().handle(conn)

    return Worker


class _Gunicorn(BaseApplication):
    """gunicorn run from Python: our options instead of a config file, our app built in each
    worker."""

    def __init__(self, options: dict, wrap: Callable[[Callable], Callable] | None = None) -> None:
        self.options = options
        self.wrap = wrap
        self.requests: RequestClock | None = None
        super().__init__()

    def load_config(self) -> None:
        """Hand gunicorn the options `run` chose."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        """Build this worker's app inside the guard, with the clock its watchdog reads."""
        # Each worker builds its own app (and database connections) after forking.
        app = create_web_app()
        self.requests = RequestClock()
        return guarded_app(app, self.requests, self.wrap)


def guarded_app(
    app, clock: RequestClock, wrap: Callable[[Callable], Callable] | None = None
) -> Callable:
    """The Flask `app` (wrapped by `wrap`) inside the guard, with each route's body limit: the
    app's MAX_CONTENT_LENGTH, and the historical import's larger one on its path only."""
    usual = app.config["MAX_CONTENT_LENGTH"]
    inner = wrap(app) if wrap else app
    return guard(inner, clock, usual, usual, {IMPORT_PATH: max(usual, MAX_IMPORT_BODY)})


def run(
    host: str,
    port: int,
    workers: int,
    threads: int = 4,
    wrap: Callable[[Callable], Callable] | None = None,
) -> None:
    """Serve the API; `wrap` (tests only) wraps the app inside the guard, as a route would."""
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": _worker_class(),
            "threads": threads,
            # The master's heartbeat timeout; a stuck request thread is the watchdog's job.
            "timeout": 60,
            "accesslog": "-",
            "logger_class": SafeAccessLogger,
            # Query strings never carry secrets here, but keep the log line short anyway.
            "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
            "post_worker_init": _post_worker_init,
            "child_exit": _child_exit,
        },
        wrap,
    ).run()
