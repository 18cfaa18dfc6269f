"""A small, seeded HTTP fault proxy on loopback, for tests that need a bad network in front of a
real server.

Each request that arrives while `faults` is on meets one fate, drawn from a `random.Random(seed)`
in arrival order: passed through, dropped before it reaches the server (the connection is closed
with no answer), forwarded and its answer dropped (the server did the work, the client never
hears of it), answered 503 by the proxy, or answered 429 with `Retry-After`. Paths listed in
`always_drop_answer` have every answer dropped while faults are on (so a call's retries are sure
to reach the server more than once), and `drop_answers(path_part, n)` drops the next n answers
of matching paths whatever `faults` says. Setting `faults = False` is the network recovering.

Threads only (one per connection) and `Connection: close` on every answer: a closed socket is
the only way to "lose" an answer, so no connection is reused.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FATES = ("pass", "drop_request", "drop_answer", "503", "429")
DEFAULT_WEIGHTS = {"pass": 55, "drop_request": 12, "drop_answer": 13, "503": 10, "429": 10}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "server",
    "date",
}


class FaultProxy:
    """`with FaultProxy(upstream_base, seed=1) as proxy:` ... `proxy.base` is its URL."""

    def __init__(
        self,
        upstream: str,
        seed: int = 0,
        weights: dict[str, int] | None = None,
        always_drop_answer: tuple[str, ...] = (),
        retry_after_s: int = 1,
    ):
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port or 80
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.always_drop_answer = tuple(always_drop_answer)
        self.retry_after_s = retry_after_s
        self.faults = True
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.fates: Counter = Counter()  # (path kind, fate) -> requests
        self.log: list[tuple[str, str, str]] = []  # (method, path, fate) in arrival order
        self._scripted: list[list] = []  # [path_part, answers still to drop]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def drop_answers(self, path_part: str, n: int = 1) -> None:
        """Forward the next n requests whose path contains path_part and drop their answers."""
        with self.lock:
            self._scripted.append([path_part, n])

    def count(self, fate: str, path_part: str = "") -> int:
        """Requests that met `fate` on paths containing path_part."""
        with self.lock:
            return sum(1 for _, p, f in self.log if f == fate and path_part in p)

    def _fate(self, method: str, path: str) -> str:
        with self.lock:
            fate = None
            for entry in self._scripted:
                if entry[1] > 0 and entry[0] in path:
                    entry[1] -= 1
                    fate = "drop_answer"
                    break
            if fate is None and self.faults:
                if any(part in path for part in self.always_drop_answer):
                    fate = "drop_answer"
                else:
                    fates = list(self.weights)
                    fate = self.rng.choices(fates, [self.weights[f] for f in fates])[0]
            fate = fate or "pass"
            self.fates[fate] += 1
            self.log.append((method, path, fate))
            return fate

    def _forward(self, method: str, path: str, headers, body: bytes):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            out["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=out)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: pytest shows failures, not traffic
                pass

            def _any(self) -> None:
                self.close_connection = True
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fate = proxy._fate(self.command, self.path)
                if fate == "drop_request":
                    return  # closed with no answer; the server never saw it
                if fate in ("503", "429"):
                    code = "service_unavailable" if fate == "503" else "rate_limited"
                    self._answer(
                        int(fate),
                        [("Retry-After", str(proxy.retry_after_s))] if fate == "429" else [],
                        json.dumps({"error": {"code": code, "message": "fault proxy"}}).encode(),
                    )
                    return
                try:
                    status, headers, answer = proxy._forward(
                        self.command, self.path, self.headers, body
                    )
                except OSError:
                    return  # the server is gone: the client sees a closed connection
                if fate == "drop_answer":
                    return  # the server did the work; its answer is lost on the way back
                kept = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
                self._answer(status, kept, answer)

            def _answer(self, status: int, headers, body: bytes) -> None:
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    if not any(k.lower() == "content-type" for k, _ in headers):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client went away (a killed phone): nothing to tell it

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _any

        return Handler
