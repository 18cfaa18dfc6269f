"""A fake WeChat API server: a real HTTP server on loopback that answers as WeChat does.

It serves the two endpoints a mini-program login touches, with WeChat's shapes and quirks:

- `GET /cgi-bin/token?grant_type=client_credential&appid=&secret=` issues an access token.
  Each fetch replaces the previous token; the old one stays valid for a short grace period
  (WeChat documents 5 minutes), so several processes refreshing on their own knock each other out.
- `GET /sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code` exchanges a
  wx.login code for `{session_key, openid[, unionid]}`. A code works once; its second use
  answers errcode 40163. WeChat does not need an access token here and ignores one if sent.

API errors come back as HTTP 200 with a JSON `{"errcode", "errmsg"}` body, the errmsg ending in a
request id (`"invalid code, rid: 6a1b2c3d-4e5f6a7b-8c9d0e1f"`), as WeChat's do. jscode2session
answers `Content-Type: text/plain` as WeChat's does; the token endpoint answers JSON.

Login codes are scripted by prefix (`FakeWeChat.script` overrides any code):

| code            | answer                                                     |
|-----------------|------------------------------------------------------------|
| anything else   | success, openid `o_<code>`, a fresh random session_key     |
| `union_<name>`  | success as above, plus unionid `u_<name>`                  |
| `bad_...`       | errcode 40029 invalid code                                 |
| `busy_...`      | errcode -1 system error                                    |
| `limit_...`     | errcode 45011 api minute-quota reach limit                 |
| `blocked_...`   | errcode 40226 (high-risk user, login blocked)              |
| `http500_...`   | HTTP 500 with an HTML body                                 |
| `drop_...`      | the connection is closed without any answer                |
| `hang_...`      | nothing is answered for `hang_s` seconds, then it closes   |

Every request is recorded (`requests`, `requests_to(path)`) so tests can check what a client
sent; `token_fetches` counts the access tokens issued and `session_keys` lists the session keys
handed out (so a test can check none of them leaks).

Standalone: `python -m fake_wechat.server --port 8765 --appid wxd3m0campus0001 --secret s`,
then run the backend with WECHAT_MODE=live, WECHAT_APPID, WECHAT_SECRET and
WECHAT_API_BASE=http://127.0.0.1:8765/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

TOKEN_PATH = "/cgi-bin/token"
LOGIN_PATH = "/sns/jscode2session"
TOKEN_GRACE_S = 300.0  # WeChat keeps the old access token usable for 5 minutes after a refresh

# errcode -> errmsg, as WeChat words them (before the rid suffix).
ERRMSG = {
    -1: "system error",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40029: "invalid code",
    40125: "invalid appsecret",
    40163: "code been used",
    40226: "code blocked",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
}


@dataclass(frozen=True)
class Script:
    """How the fake answers one request. The first field set decides; all unset means success."""

    drop: bool = False  # close the connection without answering
    hang: bool = False  # hold the connection for hang_s seconds, then close it unanswered
    http_status: int | None = None  # answer this HTTP status with an HTML error page
    errcode: int | None = None  # answer HTTP 200 with this errcode
    errmsg: str | None = None  # default: WeChat's wording for errcode
    openid: str | None = None  # on success; default o_<code>
    unionid: str | None = None  # on success; default none (u_<name> for union_<name>)


PREFIX_SCRIPTS = {
    "bad_": Script(errcode=40029),
    "busy_": Script(errcode=-1),
    "limit_": Script(errcode=45011),
    "blocked_": Script(errcode=40226),
    "http500_": Script(http_status=500),
    "drop_": Script(drop=True),
    "hang_": Script(hang=True),
}


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)


def _rid() -> str:
    return "-".join(secrets.token_hex(4) for _ in range(3))


def _error_body(errcode: int, errmsg: str | None = None) -> dict:
    text = errmsg if errmsg is not None else ERRMSG.get(errcode, "unknown error")
    return {"errcode": errcode, "errmsg": f"{text}, rid: {_rid()}"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as WeChat's front ends do
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.fake._handle(self)

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args) -> None:  # the stdlib's signature
        if not self.server.fake.quiet:
            sys.stderr.write(f"fake_wechat: {format % args}\n")

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, payload: dict, content_type: str) -> None:
        self.reply(
            200,
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
            content_type,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeWeChat


class FakeWeChat:
    """A fake WeChat API for one mini-program (appid + secret) on 127.0.0.1.

    Use as a context manager, or call start() and stop(). `base_url` is what WECHAT_API_BASE
    should be set to.
    """

    def __init__(
        self,
        appid: str = "wxd3m0campus0001",
        secret: str = "fake-app-secret",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expires_in: int = 7200,
        hang_s: float = 30.0,
        quiet: bool = True,
    ) -> None:
        self.appid = appid
        self.secret = secret
        self.host = host
        self.port = port
        self.expires_in = expires_in
        self.hang_s = hang_s
        self.quiet = quiet
        # Set to make the token endpoint fail (e.g. Script(errcode=-1) or Script(drop=True)).
        self.token_script: Script | None = None
        self.requests: list[Recorded] = []
        self.session_keys: list[str] = []
        self.token_fetches = 0
        self._scripts: dict[str, Script] = {}
        self._used_codes: set[str] = set()
        self._tokens: dict[str, float] = {}  # token -> monotonic time it stops being valid
        self._current_token: str | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeWeChat:
        if self._httpd is not None:
            raise RuntimeError("FakeWeChat is already running")
        self._stopping.clear()
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-wechat",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: afterwards WeChat is unreachable."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeWeChat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # -- scripting and inspection ------------------------------------------------------------

    def script(self, code: str, answer: Script | None = None, **fields) -> None:
        """Decide how one login code is answered: script("c", errcode=40029) or a Script."""
        self._scripts[code] = answer if answer is not None else Script(**fields)

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def current_token(self) -> str | None:
        return self._current_token

    def token_valid(self, token: str) -> bool:
        """Whether WeChat would still accept this access token now."""
        with self._lock:
            until = self._tokens.get(token)
        return until is not None and time.monotonic() < until

    # -- request handling --------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _handle(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        with self._lock:
            self.requests.append(
                Recorded(handler.command, url.path, query, dict(handler.headers.items()))
            )
        if handler.command == "GET" and url.path == TOKEN_PATH:
            self._token(handler, query)
        elif handler.command == "GET" and url.path == LOGIN_PATH:
            self._login(handler, query)
        else:
            page = b"<html><head><title>404 Not Found</title></head><body></body></html>"
            handler.reply(404, page, "text/html")

    def _misbehave(self, handler: _Handler, script: Script) -> bool:
        """Answer a transport failure or HTTP error if scripted; True when it answered."""
        if script.drop or script.hang:
            if script.hang:
                self._stopping.wait(self.hang_s)
            handler.close_connection = True  # returning without a reply closes the socket
            return True
        if script.http_status is not None:
            status = script.http_status
            page = f"<html><head><title>{status} Error</title></head><body></body></html>"
            handler.reply(status, page.encode(), "text/html")
            handler.close_connection = True
            return True
        return False

    def _credentials_error(self, query: dict[str, str]) -> int | None:
        if not query.get("appid"):
            return 41002
        if query["appid"] != self.appid:
            return 40013
        if not query.get("secret"):
            return 41004
        if query["secret"] != self.secret:
            return 40125
        return None

    def _token(self, handler: _Handler, query: dict[str, str]) -> None:
        content_type = "application/json; encoding=utf-8"
        script = self.token_script
        if script is not None:
            if self._misbehave(handler, script):
                return
            if script.errcode is not None:
                handler.reply_json(_error_body(script.errcode, script.errmsg), content_type)
                return
        if query.get("grant_type") != "client_credential":
            handler.reply_json(_error_body(40002), content_type)
            return
        errcode = self._credentials_error(query)
        if errcode is not None:
            handler.reply_json(_error_body(errcode), content_type)
            return
        token = secrets.token_urlsafe(102)
        now = time.monotonic()
        with self._lock:
            for old, until in self._tokens.items():
                self._tokens[old] = min(until, now + TOKEN_GRACE_S)
            self._tokens[token] = now + self.expires_in
            self._current_token = token
            self.token_fetches += 1
        handler.reply_json({"access_token": token, "expires_in": self.expires_in}, content_type)

    def _login(self, handler: _Handler, query: dict[str, str]) -> None:
        content_type = "text/plain"  # WeChat really does label this JSON as text/plain
        code = query.get("js_code", "")
        script = self._scripts.get(code)
        if script is None:
            script = next(
                (s for prefix, s in PREFIX_SCRIPTS.items() if code.startswith(prefix)), Script()
            )
        if self._misbehave(handler, script):
            return
        errcode = self._credentials_error(query)
        if errcode is None and query.get("grant_type") != "authorization_code":
            errcode = 40002
        if errcode is None and not code:
            errcode = 41008
        if errcode is not None:
            handler.reply_json(_error_body(errcode), content_type)
            return
        if script.errcode is not None:
            handler.reply_json(_error_body(script.errcode, script.errmsg), content_type)
            return
        with self._lock:
            if code in self._used_codes:
                used = True
            else:
                used = False
                self._used_codes.add(code)
                session_key = base64.b64encode(secrets.token_bytes(16)).decode()
                self.session_keys.append(session_key)
        if used:
            handler.reply_json(_error_body(40163), content_type)
            return
        answer = {"session_key": session_key, "openid": script.openid or f"o_{code}"}
        unionid = script.unionid
        if unionid is None and code.startswith("union_"):
            unionid = "u_" + code.removeprefix("union_")
        if unionid:
            answer["unionid"] = unionid
        handler.reply_json(answer, content_type)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake WeChat API server on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--appid", default="wxd3m0campus0001")
    parser.add_argument("--secret", default="fake-app-secret")
    args = parser.parse_args(argv)
    fake = FakeWeChat(args.appid, args.secret, host=args.host, port=args.port, quiet=False)
    fake.start()
    print(f"fake WeChat for {fake.appid} listening on {fake.base_url}", flush=True)
    print(
        f"  WECHAT_MODE=live WECHAT_APPID={fake.appid} WECHAT_SECRET={fake.secret} "
        f"WECHAT_API_BASE={fake.base_url}",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
