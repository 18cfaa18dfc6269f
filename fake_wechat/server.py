"""A fake WeChat API server: a real HTTP server on loopback that answers as WeChat does.

Long because the fake is one object: its four endpoints and the methods tests script and
inspect it with share one lock over the tokens, login codes, allowances, followers and the
request log, and this docstring is the behaviour table the tests are written against. The
parts that stand alone live beside it: field types (fields.py), errcodes and scripted
answers (answers.py), what it records (records.py).

It serves the endpoints a mini-program login and a recall message touch, with WeChat's shapes
and quirks:

- `GET /cgi-bin/token?grant_type=client_credential&appid=&secret=` issues an access token.
  Each fetch replaces the previous token; the old one stays valid for a short grace period
  (WeChat documents 5 minutes; `token_grace_s`), so several processes refreshing on their own
  knock each other out. A replaced token then answers 40001 ("not latest"); a token past its
  own `expires_in` (or `expire_token()`) answers 42001.
- `GET /sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code` exchanges a
  wx.login code for `{session_key, openid[, unionid]}`. A code works once; its second use
  answers errcode 40163. WeChat does not need an access token here and ignores one if sent.
- `POST /cgi-bin/message/subscribe/send?access_token=` sends a mini-program subscribe message
  (`{touser, template_id, page?, data: {key: {value}}, miniprogram_state?, lang?}`); success is
  `{"errcode": 0, "errmsg": "ok"}`.
- `POST /cgi-bin/message/template/send?access_token=` sends an Official Account template
  message (`{touser, template_id, url?, miniprogram?, data}`); success adds `"msgid": <int>`.

API errors come back as HTTP 200 with a JSON `{"errcode", "errmsg"}` body, the errmsg ending in a
request id (`"invalid code, rid: 6a1b2c3d-4e5f6a7b-8c9d0e1f"`), as WeChat's do. jscode2session
answers `Content-Type: text/plain` as WeChat's does; the other endpoints answer JSON.

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

Sends are checked in WeChat's order and answer:

| errcode | when                                                                         |
|---------|------------------------------------------------------------------------------|
| 41001 / 40001 / 42001 | access token missing / unknown or replaced / expired           |
| 43002   | the send endpoint was not POSTed                                             |
| 44002 / 47001 | empty body / body not a JSON object                                    |
| 40003   | touser fails `openid_rule` (default: empty or starting `bad_`)               |
| 40037   | template_id not registered with `add_template` for this kind of send         |
| 41030   | subscribe `page` not in `pages` (when `pages` is set; the query is ignored)  |
| 47003   | a template key missing, a value breaking its field type's limits, or a bad   |
|         | miniprogram_state / lang (`"argument invalid! data.thing1.value ..."`)       |
| 43101   | subscribe: no allowance left for (openid, template); `grant` adds them and   |
|         | each successful send spends one                                              |
| 43004   | template: the openid does not follow the account (`follow`)                  |

Field types and their limits (`add_template(id, {"thing1": None, "keyword1": "text"},
kind=...)`, the type inferred from the key without its digits) are in fake_wechat/fields.py;
values must be non-empty strings.

`script_send(openid, *scripts)` queues Scripts for that openid's sends (both endpoints), one
consumed per send before any other check: `Script(errcode=45011)`, `Script()` (handle normally),
`Script(drop=True)`, `Script(hang=True)`, `Script(http_status=502)`.

Every request is recorded (`requests`, `requests_to(path)`; POSTs carry their parsed JSON
`body`) so tests can check what a client sent; `token_fetches` counts the access tokens issued,
`session_keys` lists the session keys handed out (so a test can check none of them leaks), and
`sent` / `sent_to(openid)` list the messages delivered.

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
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fake_wechat.answers import ERRMSG, PREFIX_SCRIPTS, Script, error_body
from fake_wechat.fields import FIELD_TYPES, field_problem, field_type
from fake_wechat.records import Recorded, Sent, Template, default_openid_rule

TOKEN_PATH = "/cgi-bin/token"
LOGIN_PATH = "/sns/jscode2session"
SUBSCRIBE_SEND_PATH = "/cgi-bin/message/subscribe/send"
TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"
TOKEN_GRACE_S = 300.0  # WeChat keeps the old access token usable for 5 minutes after a refresh

_NOT_JSON = object()  # a request body that is absent or does not parse as JSON
JSON_TYPE = "application/json; encoding=utf-8"


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
        self.server.fake._handle(self, self.rfile.read(length) if length else b"")

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args) -> None:  # the stdlib's signature
        if not self.server.fake.quiet:
            sys.stderr.write(f"fake_wechat: {format % args}\n")

    def reply(self, status: int, body: bytes, content_type: str, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:  # tell the client, so it does not reuse the connection about to be closed
            self.send_header("Connection", "close")
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
        self.token_grace_s = TOKEN_GRACE_S
        # Messages: the mini-program's known pages (None: any page), which touser values are
        # openids, and what was delivered.
        self.pages: set[str] | None = None
        self.openid_rule: Callable[[str], bool] = default_openid_rule
        self.templates: dict[str, Template] = {}
        self.sent: list[Sent] = []
        self._scripts: dict[str, Script] = {}
        self._send_scripts: dict[str, deque[Script]] = {}
        self._allowances: dict[tuple[str, str], int] = {}  # (openid, template_id) -> count
        self._followers: set[str] = set()
        self._next_msgid = 3_000_000_001
        self._used_codes: set[str] = set()
        self._tokens: dict[str, float] = {}  # token -> monotonic time it stops being valid
        self._replaced: set[str] = set()  # tokens cut short by a newer fetch
        self._current_token: str | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeWeChat:
        """Listen (on `port`, or a free one when 0) and serve on a daemon thread; returns self."""
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
        """Where the fake answers, with a trailing slash: the value for WECHAT_API_BASE."""
        return f"http://{self.host}:{self.port}/"

    # -- scripting and inspection ------------------------------------------------------------

    def script(self, code: str, answer: Script | None = None, **fields) -> None:
        """Decide how one login code is answered: script("c", errcode=40029) or a Script."""
        self._scripts[code] = answer if answer is not None else Script(**fields)

    def requests_to(self, path: str) -> list[Recorded]:
        """The requests received for one endpoint (TOKEN_PATH, LOGIN_PATH, ...), in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def current_token(self) -> str | None:
        """The access token issued last (None before any fetch)."""
        return self._current_token

    def token_valid(self, token: str) -> bool:
        """Whether WeChat would still accept this access token now."""
        with self._lock:
            until = self._tokens.get(token)
        return until is not None and time.monotonic() < until

    def expire_token(self, token: str | None = None) -> None:
        """Make a token (default: the current one) reach its expiry now: it answers 42001."""
        with self._lock:
            token = token or self._current_token
            if token not in self._tokens:
                raise KeyError("no such access token")
            self._tokens[token] = time.monotonic()
            self._replaced.discard(token)

    # -- messages ----------------------------------------------------------------------------

    def add_template(
        self,
        template_id: str,
        fields: Mapping[str, str | None] | Iterable[str],
        kind: str = "subscribe",
    ) -> Template:
        """Register a template: data key -> field type (None: inferred from the key's prefix).

        Subscribe keys must name a type (thing1, time2, ...); an Official Account template may
        also have untyped legacy keys (first, keyword1, remark), which take any text.
        """
        if kind not in ("subscribe", "template"):
            raise ValueError(f"kind must be 'subscribe' or 'template', not {kind!r}")
        items = fields.items() if isinstance(fields, Mapping) else ((k, None) for k in fields)
        typed: dict[str, str] = {}
        for key, given in items:
            ftype = given or field_type(key) or ("text" if kind == "template" else None)
            if ftype not in FIELD_TYPES:
                raise ValueError(f"no field type for {key!r}: give one of {FIELD_TYPES}")
            typed[key] = ftype
        template = Template(template_id, kind, typed)
        with self._lock:
            self.templates[template_id] = template
        return template

    def grant(self, openid: str, template_id: str, count: int = 1) -> None:
        """The user accepted this subscribe template `count` times (one message each)."""
        with self._lock:
            key = (openid, template_id)
            self._allowances[key] = self._allowances.get(key, 0) + count

    def allowance(self, openid: str, template_id: str) -> int:
        """Subscribe messages of this template the user still accepts (`grant` minus sends)."""
        with self._lock:
            return self._allowances.get((openid, template_id), 0)

    def follow(self, openid: str) -> None:
        """The user follows the Official Account, so template messages reach them."""
        with self._lock:
            self._followers.add(openid)

    def unfollow(self, openid: str) -> None:
        """The user stops following the Official Account: template sends answer 43004."""
        with self._lock:
            self._followers.discard(openid)

    def script_send(self, openid: str, *scripts: Script) -> None:
        """Queue answers for this openid's next sends, one per send; Script() = handle normally."""
        with self._lock:
            self._send_scripts.setdefault(openid, deque()).extend(scripts)

    def sent_to(self, openid: str) -> list[Sent]:
        """The messages delivered to one openid, in order."""
        with self._lock:
            return [m for m in self.sent if m.openid == openid]

    # -- request handling --------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _handle(self, handler: _Handler, raw: bytes | None = None) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = _NOT_JSON
        if raw:
            with contextlib.suppress(ValueError):  # UnicodeDecodeError is a ValueError too
                body = json.loads(raw)
        with self._lock:
            self.requests.append(
                Recorded(
                    handler.command,
                    url.path,
                    query,
                    dict(handler.headers.items()),
                    None if body is _NOT_JSON else body,
                )
            )
        if handler.command == "GET" and url.path == TOKEN_PATH:
            self._token(handler, query)
        elif handler.command == "GET" and url.path == LOGIN_PATH:
            self._login(handler, query)
        elif url.path == SUBSCRIBE_SEND_PATH:
            self._send(handler, "subscribe", query, raw, body)
        elif url.path == TEMPLATE_SEND_PATH:
            self._send(handler, "template", query, raw, body)
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
            handler.reply(status, page.encode(), "text/html", close=True)
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
                handler.reply_json(error_body(script.errcode, script.errmsg), content_type)
                return
        if query.get("grant_type") != "client_credential":
            handler.reply_json(error_body(40002), content_type)
            return
        errcode = self._credentials_error(query)
        if errcode is not None:
            handler.reply_json(error_body(errcode), content_type)
            return
        token = secrets.token_urlsafe(102)
        now = time.monotonic()
        with self._lock:
            cut = now + self.token_grace_s
            for old, until in self._tokens.items():
                if until > cut:
                    self._tokens[old] = cut
                    self._replaced.add(old)
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
            handler.reply_json(error_body(errcode), content_type)
            return
        if script.errcode is not None:
            handler.reply_json(error_body(script.errcode, script.errmsg), content_type)
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
            handler.reply_json(error_body(40163), content_type)
            return
        answer = {"session_key": session_key, "openid": script.openid or f"o_{code}"}
        unionid = script.unionid
        if unionid is None and code.startswith("union_"):
            unionid = "u_" + code.removeprefix("union_")
        if unionid:
            answer["unionid"] = unionid
        handler.reply_json(answer, content_type)

    def _token_error(self, token: str) -> int | None:
        if not token:
            return 41001
        with self._lock:
            until = self._tokens.get(token)
            replaced = token in self._replaced
        if until is None:
            return 40001
        if time.monotonic() < until:
            return None
        return 40001 if replaced else 42001  # a replaced token is "not latest"

    def _send(
        self, handler: _Handler, kind: str, query: dict[str, str], raw: bytes | None, body: Any
    ) -> None:
        """subscribe/send or template/send: scripts, then WeChat's checks in order, then deliver."""
        touser = body.get("touser") if isinstance(body, dict) else None
        script = None
        if isinstance(touser, str):
            with self._lock:
                queue = self._send_scripts.get(touser)
                if queue:
                    script = queue.popleft()
        if script is not None:
            if self._misbehave(handler, script):
                return
            if script.errcode is not None:
                handler.reply_json(error_body(script.errcode, script.errmsg), JSON_TYPE)
                return
        answer = self._check_send(handler.command, kind, query, raw, body)
        if isinstance(answer, int):
            handler.reply_json(error_body(answer), JSON_TYPE)
        elif isinstance(answer, str):
            handler.reply_json(error_body(47003, answer), JSON_TYPE)
        else:
            handler.reply_json(answer, JSON_TYPE)

    def _check_send(
        self, method: str, kind: str, query: dict[str, str], raw: bytes | None, body: Any
    ) -> int | str | dict:
        """An errcode, a 47003 errmsg, or the success answer (after delivering the message)."""
        errcode = self._token_error(query.get("access_token", ""))
        if errcode is not None:
            return errcode
        if method != "POST":
            return 43002
        if not raw:
            return 44002
        if not isinstance(body, dict):
            return 47001
        openid = body.get("touser")
        if not isinstance(openid, str) or not self.openid_rule(openid):
            return 40003
        template_id = body.get("template_id")
        with self._lock:
            template = self.templates.get(template_id) if isinstance(template_id, str) else None
        if template is None or template.kind != kind:
            return 40037
        page = body.get("page") if kind == "subscribe" else None
        pages = self.pages
        if page is not None and (
            not isinstance(page, str) or (pages is not None and page.split("?")[0] not in pages)
        ):
            return 41030
        if kind == "subscribe":
            state, lang = body.get("miniprogram_state"), body.get("lang")
            if state is not None and state not in ("developer", "trial", "formal"):
                return f"{ERRMSG[47003]} miniprogram_state invalid"
            if lang is not None and lang not in ("zh_CN", "en_US", "zh_HK", "zh_TW"):
                return f"{ERRMSG[47003]} lang invalid"
        data = body.get("data")
        if not isinstance(data, dict):
            return f"{ERRMSG[47003]} data is empty"
        values: dict[str, str] = {}
        for key, ftype in template.fields.items():
            entry = data.get(key)
            if not isinstance(entry, dict) or "value" not in entry:
                return f"{ERRMSG[47003]} data.{key}.value is empty"
            problem = field_problem(ftype, entry["value"])
            if problem is not None:
                return f"{ERRMSG[47003]} data.{key}.value {problem}"
            values[key] = entry["value"]
        with self._lock:
            if kind == "subscribe":
                left = self._allowances.get((openid, template.template_id), 0)
                if left <= 0:
                    return 43101
                self._allowances[(openid, template.template_id)] = left - 1
                msgid = None
            else:
                if openid not in self._followers:
                    return 43004
                msgid = self._next_msgid
                self._next_msgid += 1
            self.sent.append(
                Sent(
                    kind=kind,
                    openid=openid,
                    template_id=template.template_id,
                    data=values,
                    page=page,
                    url=body.get("url") if kind == "template" else None,
                    at=time.monotonic(),
                    miniprogram=body.get("miniprogram") if kind == "template" else None,
                    miniprogram_state=body.get("miniprogram_state")
                    if kind == "subscribe"
                    else None,
                    lang=body.get("lang") if kind == "subscribe" else None,
                    msgid=msgid,
                )
            )
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
        if msgid is not None:
            answer["msgid"] = msgid
        return answer


def main(argv: list[str] | None = None) -> None:
    """Run the fake standalone until Ctrl-C, printing the settings that point the backend at
    it (`python -m fake_wechat.server --port 8765`)."""
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
