"""Untrusted documents: bounded parsing, unstorable strings, and what validates is what loads.

Issue 14 items 2, 3 (part) and 5: a 432-byte YAML "billion laughs", deep nesting and unsafe
tags are refused with a 400 naming the problem (never a 500 or a pinned worker); an unpaired
surrogate anywhere a string is accepted is a 400 naming the field, and in an event batch it
rejects only its own event; a flow-style YAML policy is stored and loaded by the same parser.
The first block needs no database; the rest run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers.admin_session import csrf_from, sign_in
from helpers.app import login
from helpers.campaigns import POLICY, add_policy

from backend.core import documents
from backend.core.documents import DocumentError
from backend.core.policy import PolicyError, parse_policy
from backend.web.server import RequestClock, SafeAccessLogger, escape_for_log, guard, watch
from simulator.params import SimParams

ROOT = Path(__file__).resolve().parents[1]

# Nine levels of nine aliases: 432 bytes of text, 9⁹ ≈ 387 million values once expanded.
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
DEEP_YAML_FLOW = "name: x\narms: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_YAML_BLOCK = "".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v: 1\n"
DEEP_JSON = "[" * 5000 + "]" * 5000
PYTHON_TAG = "name: !!python/object/apply:os.system ['echo pwned']\n"
FLOW_POLICY = yaml.safe_dump(
    yaml.safe_load((ROOT / "seeds" / "policies" / "payment_failed.yaml").read_text("utf-8")),
    default_flow_style=True,
    allow_unicode=True,
    width=10**6,
)
LONE = "\ud800"
# Shallow but large: 30,000 values in 60 KB (under every byte limit, over the value limit), and
# 200,000 in 400 KB; the pure-Python YAML parser spends ~15 µs on each value it reaches.
SHALLOW = "name: x\narms: [" + ",".join(["1"] * 30_000) + "]\n"
FLAT_FLOW = "a: [" + ",".join(["1"] * 200_000) + "]\n"
FLAT_BLOCK = "a:\n" + "- 1\n" * 200_000


def refused(text: str, **limits) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        documents.load_text(text, **limits)
    return caught.value


# -- the bounded loader, no database ------------------------------------------------------------


def test_billion_laughs_is_refused_from_its_nine_nodes():
    assert len(LAUGHS.encode()) < 500
    err = refused(LAUGHS)
    assert err.code == "too_many_aliases" and "expanded" in str(err)
    # a few aliases within the limits are ordinary YAML
    data, _ = documents.load_yaml("base: &b {x: 1}\nuse: [*b, *b]\nmerged: {<<: *b, y: 2}\n")
    assert data == {"base": {"x": 1}, "use": [{"x": 1}, {"x": 1}], "merged": {"x": 1, "y": 2}}


def test_alias_uses_are_counted():
    text = "a: &a x\nb: [" + ", ".join(["*a"] * 50) + "]\n"
    assert documents.load_yaml(text)[0]["b"] == ["x"] * 50
    assert refused(text, max_aliases=49).code == "too_many_aliases"


def test_an_alias_inside_its_own_anchor_is_refused():
    assert refused("a: &a [1, *a]\n").code == "too_many_aliases"


def test_an_alias_chain_deeper_than_the_limit_is_refused():
    chain = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 300))
    assert refused(chain).code == "document_too_deep"


@pytest.mark.parametrize("text", [DEEP_YAML_FLOW, DEEP_YAML_BLOCK, DEEP_JSON, "{" * 3000])
def test_deep_nesting_is_refused_not_a_recursion_error(text):
    err = refused(text)
    assert err.code == "document_too_deep" and "nested deeper than" in str(err)


def test_json_depth_is_checked_before_json_parses():
    with pytest.raises(DocumentError) as caught:
        documents.load_json(DEEP_JSON.encode())
    assert caught.value.code == "document_too_deep"
    # brackets inside strings are text, not nesting
    assert documents.load_json(json.dumps({"s": "[" * 5000})) == {"s": "[" * 5000}


@pytest.mark.parametrize(
    "text, tag",
    [
        (PYTHON_TAG, "!!python/object/apply:os.system"),
        ("a: !!binary aGVsbG8=\n", "!!binary"),
        ("a: !!set {x}\n", "!!set"),
        ("a: !mine 1\n", "!mine"),
        ("a: !!timestamp 2024-01-01\n", "!!timestamp"),
    ],
)
def test_only_plain_data_tags(text, tag):
    err = refused(text)
    assert err.code == "unsafe_tag" and tag in str(err) and err.line == 1


def test_dates_stay_text_as_in_json():
    assert documents.load_yaml("d: 2024-01-01\n")[0] == {"d": "2024-01-01"}


def test_size_limit():
    assert refused("a: " + "x" * 200, max_bytes=100).code == "document_too_large"
    with pytest.raises(DocumentError) as caught:
        documents.load_json(b"[" + b"1," * 100 + b"1]", max_bytes=100)
    assert caught.value.code == "document_too_large"


def test_too_many_values_is_refused():
    text = "[" + ",".join(["1"] * 300) + "]"
    assert refused("a: " + text, max_nodes=100).code == "document_too_large"


@pytest.mark.parametrize("text", [FLAT_FLOW, FLAT_BLOCK], ids=["flow", "block"])
def test_a_large_flat_document_stops_composing_at_the_value_limit(text, monkeypatch):
    """The value limit stops the composer when it is reached: counting only after the whole
    node graph was built cost 6-12 s of CPU for 1 MiB of `[1,1,…]` before its 400."""
    calls = 0
    compose_node = yaml.composer.Composer.compose_node

    def counted(self, parent, index):
        nonlocal calls
        calls += 1
        return compose_node(self, parent, index)

    monkeypatch.setattr(yaml.composer.Composer, "compose_node", counted)
    err = refused(text, max_bytes=len(text))  # past the byte limit, to reach the composer
    assert err.code == "document_too_large"
    assert f"more than {documents.MAX_NODES} values" in str(err)
    assert calls <= documents.MAX_NODES + 2  # the root mapping, its key, then the list


def test_policies_are_held_to_a_small_size_and_value_count():
    """A real policy is a few KB and ~150 values; the loader refuses far more of either at
    once, whichever syntax carries it."""
    for text, says in (
        (FLAT_FLOW, "the limit is 65536"),
        ("a: " + "x" * 70_000 + "\n", "the limit is 65536"),
        (SHALLOW, f"more than {documents.MAX_NODES} values"),
        (json.dumps({"name": "x", "arms": [1] * 6_000}), f"more than {documents.MAX_NODES} values"),
        (json.dumps({"name": "x", "m": {str(k): 1 for k in range(3_000)}}), "values"),
    ):
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        assert caught.value.code == "document_too_large" and says in str(caught.value), text[:40]
    assert documents.load_json(json.dumps([1] * 6_000)) == [1] * 6_000  # request bodies: no count


def test_an_unterminated_json_string_is_read_once():
    """`"\\"\\"…` with no closing quote: the string pattern used to fail at the end and start
    again from the next quote, O(n²) (80 KB took 12 s; a 2 MiB request body, hours)."""
    trap = "[" * 65 + '"' + '\\"' * 20
    found = documents._JSON_STRING.search(trap)
    assert found is not None and found.end() == len(trap)  # one match, to the end of the text
    body = ("[" * 65 + '"' + '\\"' * 1_000_000).encode()
    with pytest.raises(DocumentError) as caught:
        documents.load_json(body, max_bytes=len(body))
    assert caught.value.code == "document_too_deep"


def test_duplicate_keys_name_path_and_line():
    err = refused("a:\n  b: 1\n  b: 2\n")
    assert (err.code, err.path, err.line) == ("duplicate_key", "a.b", 3)
    assert refused('{"a": 1, "a": 2}').code == "duplicate_key"


def test_unstorable_strings_name_their_path():
    err = refused('a:\n  - ok\n  - "x\\ud800"\n')
    assert err.code == "unstorable_string" and err.path == "a[1]" and "U+D800" in str(err)
    err = refused('{"a": [{"b": "\\u0000"}]}')
    assert err.path == "a[0].b" and "U+0000" in str(err)
    assert documents.unstorable({"events": [{}, {"type": LONE}]}) == (
        "events[1].type: strings must not contain an unpaired surrogate (U+D800)"
    )
    assert "U+DC00" in documents.unstorable({"p": {"\udc00": 1}})
    assert documents.unstorable({"x": float("nan")}) == "x: NaN and Infinity are not allowed"
    assert documents.unstorable({"ok": ["好", "😀", 1.5]}) is None


def test_a_clean_body_is_cleared_without_a_python_walk(monkeypatch):
    """Walking every value of a 2 MiB body in Python cost a second of CPU on every JSON route,
    /mp/v1/login included; a value with nothing wrong is cleared by one json.dumps."""
    # the text `\\u0000` looks like U+0000 to the fast path; the walk clears it
    assert documents.unstorable({"s": "\\u0000 is only text"}) is None
    assert "U+0000" in documents.unstorable({"s": ["ok", "a\x00b"]})

    def walked(text):
        raise AssertionError("walked in Python")

    monkeypatch.setattr(documents, "string_problem", walked)
    body = {
        "events": [{"type": "page_view", "props": {"页面": "首页 😀"}, "n": i} for i in range(1000)]
    }
    assert documents.unstorable(body) is None


def test_json_is_read_as_json_and_flow_yaml_as_yaml():
    # YAML 1.1 reads 1e-05 as a string and "\ud83d\ude00" as two lone surrogates; JSON does not
    assert documents.load_text('{"f": 1e-05, "s": "\\ud83d\\ude00"}')[0] == {"f": 1e-05, "s": "😀"}
    assert documents.load_text("{name: x, arms: [1, 2]}")[0] == {"name": "x", "arms": [1, 2]}


def test_policy_parser_maps_limits_to_their_codes():
    for text, code in (
        (LAUGHS, "too_many_aliases"),
        (DEEP_YAML_FLOW, "document_too_deep"),
        (PYTHON_TAG, "unsafe_tag"),
        ('name: "\\ud800"\n', "invalid_policy"),
    ):
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        assert caught.value.code == code, text[:40]
    assert parse_policy(FLOW_POLICY).trigger == "payment_failed"


def test_params_files_are_bounded():
    params = SimParams()
    assert SimParams.from_json(params.to_json()) == params
    for text, code in ((DEEP_JSON, "document_too_deep"), ('{"a": 1, "a": 2}', "duplicate_key")):
        with pytest.raises(DocumentError) as caught:
            SimParams.from_json(text)
        assert caught.value.code == code


@pytest.mark.parametrize("name", ["demo_tenant.yaml", "policies/tiered.yaml", "../README.md"])
def test_a_params_file_names_only_a_calendar_file(name):
    """A `--params` file cannot make the simulator read another file under seeds/."""
    text = json.loads(SimParams().to_json())
    text["calendar"] = name
    with pytest.raises(ValueError, match="calendar must be one of"):
        SimParams.from_json(json.dumps(text))
    from simulator.calendar import CampusCalendar

    with pytest.raises(ValueError, match="not one of"):
        CampusCalendar.load(name)


# -- the server: access log and request watchdog ------------------------------------------------


def test_logged_paths_cannot_forge_lines():
    assert (
        escape_for_log('/x\n1.2.3.4 "GET /admin" 200') == "/x\\x0a1.2.3.4 \\x22GET /admin\\x22 200"
    )

    class Cfg:
        errorlog = "-"
        accesslog = None
        loglevel = "info"
        syslog = False
        capture_output = False
        logconfig = logconfig_dict = logconfig_json = None
        user = group = None

    logger = SafeAccessLogger.__new__(SafeAccessLogger)

    class Resp:
        status, sent, headers = "200 OK", 1, []

    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/x%0Ay", "SERVER_PROTOCOL": "HTTP/1.1"}
    environ["PATH_INFO"] = "/x\ny"
    atoms = logger.atoms(Resp(), {}, environ, __import__("datetime").timedelta(0))
    assert atoms["U"] == "/x\\x0ay" and "\n" not in "".join(map(str, atoms.values()))


def test_the_watchdog_reports_the_oldest_overdue_request():
    clock = RequestClock()
    seen = []
    worker = threading.Thread(target=lambda: clock.start("GET /slow", now=time.monotonic() - 99))
    worker.start()
    worker.join()
    clock.start("GET /fresh")
    watch(clock, 10.0, lambda s, what: seen.append((s > 10, what)), poll_s=0.01)
    assert seen == [(True, "GET /slow")]
    clock.stop()
    assert [w for _, w in clock.overdue(10.0)] == ["GET /slow"]


def test_the_guard_reads_the_body_before_the_watchdog_clock_starts():
    """The application's time is timed, the client's is not: a body is read whole first, a
    stalled one (the socket's read timeout) is a 408 that never reaches the application."""
    clock = RequestClock()
    seen: dict = {}

    def app(environ, start_response):
        seen["running"] = [what for _, what in clock.overdue(-1.0)]
        seen["body"] = environ["wsgi.input"].read()
        seen["length"] = environ["CONTENT_LENGTH"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    class Stalled(io.RawIOBase):
        def read(self, size=-1):
            raise BlockingIOError(11, "Resource temporarily unavailable")

    guarded = guard(app, clock, max_body=100, spool_bytes=10)
    statuses: list[str] = []

    def call(stream, length: str, **headers: str) -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/p\n", "CONTENT_LENGTH": length}
        environ.update(headers, **{"wsgi.input": stream})
        result = guarded(environ, lambda status, headers: statuses.append(status))
        try:
            return b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()

    assert call(io.BytesIO(b"x" * 50), "50") == b"ok"
    assert seen == {"running": ["POST /p\\x0a"], "body": b"x" * 50, "length": "50"}
    assert clock.overdue(-1.0) == []  # stopped once the response was produced
    # a chunked body is given its length, and one over the limit is a 413 from the guard
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    assert call(io.BytesIO(b"y" * 30), "", **chunked) == b"ok" and seen["length"] == "30"
    seen.clear()
    big = io.BytesIO(b"y" * 500)
    assert b'"payload_too_large"' in call(big, "", **chunked) and statuses[-1].startswith("413")
    assert big.tell() == 101 and seen == {}  # cut off one byte past the limit
    assert b'"request_timeout"' in call(Stalled(), "50") and statuses[-1].startswith("408")
    assert b'"incomplete_body"' in call(io.BytesIO(b"x" * 5), "50")
    assert statuses[-1].startswith("400") and seen == {} and clock.overdue(-1.0) == []


class _Counted(io.RawIOBase):
    """A client's body of `size` bytes, made as it is read, counting what the server read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def read(self, n=-1):
        n = self.size - self.read_bytes if n is None or n < 0 else n
        n = min(n, self.size - self.read_bytes)
        self.read_bytes += n
        return b"{" + b" " * (n - 1) if n else b""


def test_the_guard_holds_each_route_to_its_own_body_limit(app):
    """The serving guard (as `serve` builds it) reads no more than the request's route takes.

    Before, it read up to the import's 16 MiB on every route: a 15 MiB POST to the login
    (limit 2 MiB) was read and spooled whole before werkzeug's 413."""
    from backend.web.admin.routes import MAX_IMPORT_BODY
    from backend.web.server import IMPORT_PATH, guarded_app

    assert IMPORT_PATH in {rule.rule for rule in app.url_map.iter_rules()}
    usual = app.config["MAX_CONTENT_LENGTH"]
    assert MAX_IMPORT_BODY > 15 * 1024 * 1024 > usual
    guarded = guarded_app(app, RequestClock())

    def post(path: str, stream: _Counted, length: str, **headers: str) -> tuple[str, dict]:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.errors": io.StringIO(),
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": length,
            "wsgi.input": stream,
            **headers,
        }
        statuses: list[str] = []
        result = guarded(environ, lambda status, headers: statuses.append(status))
        try:
            return statuses[-1], json.loads(b"".join(result))
        finally:
            if hasattr(result, "close"):
                result.close()

    big = 15 * 1024 * 1024
    body = _Counted(big)
    status, reply = post("/mp/v1/login", body, str(big))
    assert status.startswith("413") and body.read_bytes <= 64 * 1024, body.read_bytes
    assert reply["error"] == {
        "code": "payload_too_large",
        "message": f"request body exceeds the limit of {usual} bytes for this endpoint",
    }
    # chunked: cut off just past the route's limit
    body = _Counted(big)
    status, reply = post("/mp/v1/login", body, "", HTTP_TRANSFER_ENCODING="chunked")
    assert status.startswith("413") and body.read_bytes == usual + 1
    assert str(usual) in reply["error"]["message"]
    # the import takes the same body: read whole and handed on (a 401: no API key)
    body = _Counted(big)
    status, reply = post(IMPORT_PATH, body, str(big))
    assert status.startswith("401") and body.read_bytes == big
    body = _Counted(MAX_IMPORT_BODY + 1)
    status, reply = post(IMPORT_PATH, body, str(MAX_IMPORT_BODY + 1))
    assert status.startswith("413") and body.read_bytes == 0
    assert str(MAX_IMPORT_BODY) in reply["error"]["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# `python app.py serve --workers 2`, through the same server.run, with one route added inside
# its guard that never returns in useful time. Production code has no such route: `wrap` is
# the only hook, and only tests pass it.
SERVE_WITH_HANG = """
import sys, time
from backend.web.server import run

def hang(app):
    def wrapped(environ, start_response):
        if environ["PATH_INFO"] == "/__test__/hang":
            print("test hang route: request started", flush=True)
            time.sleep(3600)
        return app(environ, start_response)
    return wrapped

run("127.0.0.1", int(sys.argv[1]), workers=2, wrap=hang)
"""


@contextlib.contextmanager
def _serving(tmp_path: Path, command: list[str], **env_extra: str):
    """A live server (master and workers) started by `command` + `--port N`; yields its base
    URL, port and log file, and kills its whole process group after."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **env_extra,
    }
    app_py = str(ROOT / "app.py")
    subprocess.run([sys.executable, app_py, "init-db"], env=env, check=True, capture_output=True)
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [*command, str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", port, log_path
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # master and workers, stuck threads and all
        server.wait(timeout=30)


def _wait_for(what: str, log_path: Path, deadline: float, count: int = 1) -> None:
    while _text(log_path).count(what) < count:
        assert time.monotonic() < deadline, _text(log_path)
        time.sleep(0.05)


def test_a_runaway_request_does_not_take_the_server(tmp_path):
    """Every request thread of both workers stuck: the watchdog recycles them, /healthz answers.

    Without the watchdog gthread's heartbeat keeps the stuck workers alive for ever."""
    command = [sys.executable, "-c", SERVE_WITH_HANG]
    with _serving(tmp_path, command, HUILIU_REQUEST_TIMEOUT_S="1") as (base, _, log_path):
        deadline = time.monotonic() + 60  # deadlines to give up, not speed requirements
        _wait_for("Booting worker", log_path, deadline, count=2)
        hangs = [
            threading.Thread(target=_swallow, args=(base + "/__test__/hang",), daemon=True)
            for _ in range(40)  # more than the 2 x 4 request threads
        ]
        for t in hangs:
            t.start()
        _wait_for("recycling worker", log_path, deadline)  # never happens without the watchdog
        _wait_for("exited with code 70", log_path, deadline)  # the master saw it go
        status = None
        while status is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status, _ = _get(base + "/healthz", 2)
        assert status == 200
        assert _get(base + "/x%0Aforged%20line", 5)[0] == 404
        _wait_for("forged line", log_path, deadline)  # the access line follows the response
    text = _text(log_path)
    assert "request GET /__test__/hang has run" in text and "exited with code 70" in text
    assert not any(line.startswith("forged") for line in text.splitlines())
    assert "/x\\x0aforged line" in text


@pytest.mark.slow
def test_a_client_slow_to_send_does_not_recycle_the_worker(tmp_path):
    """A client that sends headers and holds its body, or half its headers and waits, is the
    client's time, not the application's: that request alone fails (408 or a closed
    connection) once the client timeout passes, and the one worker keeps answering.

    Before, the watchdog's clock started before the body was read, so a held body (no login
    needed) had the worker os._exit-ed with every other request in it; and held headers kept a
    thread for ever, so eight such connections stopped the server."""
    command = [sys.executable, str(ROOT / "app.py"), "serve", "--workers", "1", "--port"]
    env = {"HUILIU_REQUEST_TIMEOUT_S": "1", "HUILIU_CLIENT_TIMEOUT_S": "3"}
    with _serving(tmp_path, command, **env) as (base, port, log_path):
        deadline = time.monotonic() + 60  # deadlines to give up, not speed requirements
        _wait_for("Booting worker", log_path, deadline)
        held = socket.create_connection(("127.0.0.1", port))
        held.sendall(
            b"POST /mp/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"code": '
        )
        # the request is in the worker now, for longer than HUILIU_REQUEST_TIMEOUT_S
        assert _get(base + "/healthz", 30)[0] == 200
        held.settimeout(30)
        reply = _read_all(held)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b'"request_timeout"' in reply
        # more half-sent headers than the worker has threads
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        for conn in stalled:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        assert _get(base + "/healthz", 30)[0] == 200
        for conn in stalled:
            conn.settimeout(30)
            assert _read_all(conn) == b""  # closed by the server, nothing answered
        assert _get(base + "/healthz", 30)[0] == 200
    text = _text(log_path)
    assert "recycling worker" not in text and "exited with code" not in text, text


def _read_all(conn: socket.socket) -> bytes:
    out = b""
    with conn:
        while chunk := conn.recv(65536):
            out += chunk
    return out


def _text(path: Path) -> str:
    return path.read_text("utf-8", "replace")


def _swallow(url: str) -> None:
    with contextlib.suppress(OSError):
        _get(url, 120)


# -- the API, on both databases -----------------------------------------------------------------


@pytest.mark.parametrize(
    "source, code",
    [
        (LAUGHS, "too_many_aliases"),
        (DEEP_YAML_FLOW, "document_too_deep"),
        (DEEP_YAML_BLOCK, "document_too_deep"),
        (PYTHON_TAG, "unsafe_tag"),
        (SHALLOW, "document_too_large"),
        ('name: "comeback\\ud800"\n', "invalid_policy"),
    ],
)
def test_hostile_policy_files_are_a_400_naming_the_problem(client, tenant, source, code):
    add_policy(client, tenant, POLICY)
    for method, url in (("post", "/admin/v1/policies"), ("put", "/admin/v1/policies/comeback")):
        resp = getattr(client, method)(url, json={"source": source}, headers=tenant.admin)
        assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
        err = resp.get_json()["error"]
        assert err["code"] == code
    if code == "invalid_policy":
        assert err["field"] == "name" and "surrogate" in err["message"]
    assert client.get("/admin/v1/policies", headers=tenant.admin).status_code == 200


def test_deep_json_bodies_are_a_400(client, tenant):
    for url, headers in (
        ("/admin/v1/policies", tenant.admin),
        ("/admin/v1/events/import", tenant.admin),
        ("/mp/v1/events", login(client, tenant)),
    ):
        body = '{"policy": ' + DEEP_JSON + "}"
        resp = client.post(url, data=body, headers=headers, content_type="application/json")
        assert resp.status_code == 400, url
        assert resp.get_json()["error"]["code"] == "document_too_deep"


def test_the_dashboard_forms_use_the_bounded_loader(app, client, tenant):
    add_policy(client, tenant, POLICY)
    sign_in(client, tenant.api_key)
    token = csrf_from(client.get("/admin/policies/comeback").get_data(as_text=True))
    for source in (LAUGHS, DEEP_YAML_FLOW, PYTHON_TAG, SHALLOW):
        resp = client.post(
            "/admin/policies/comeback/check",
            data={"source": source, "csrf_token": token, "action": "validate"},
        )
        assert resp.status_code == 400 and "校验未通过" in resp.get_data(as_text=True)
        resp = client.post(
            "/admin/simulations",
            data={"csrf_token": token, "policy_file": (io.BytesIO(source.encode()), "p.yaml")},
            content_type="multipart/form-data",
        )
        assert resp.status_code == 400, resp.get_data(as_text=True)[:300]


def _request_bodies(client) -> list[tuple[str, str]]:
    """(method, path) of every JSON-body route the API documents, path parameters filled."""
    doc = client.get("/openapi.json").get_json()
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                filled = path
                for p in op.get("parameters", []):
                    if p["in"] == "path":
                        value = "1" if p["schema"]["type"] == "integer" else "comeback"
                        filled = filled.replace("{" + p["name"] + "}", value)
                out.append((method, filled))
    return out


def test_every_json_route_refuses_a_lone_surrogate_naming_the_field(client, tenant):
    add_policy(client, tenant, POLICY)
    headers = {**tenant.admin, **login(client, tenant), "X-Huiliu-Appid": tenant.appid}
    routes = _request_bodies(client)
    assert len(routes) >= 10
    # `events` and `sent_at` are fields of the batch routes; every route checks strings first
    body = {"events": [], "sent_at": LONE}
    for method, path in routes:
        resp = client.open(path, method=method.upper(), json=body, headers=headers)
        assert resp.status_code == 400, (method, path, resp.get_data(as_text=True)[:200])
        message = resp.get_json()["error"]["message"]
        assert "sent_at" in message and "surrogate" in message, (method, path, message)


@pytest.mark.parametrize(
    "method, url, body, field",
    [
        ("POST", "/mp/v1/login", {"code": "a" + LONE}, "code"),
        ("POST", "/mp/v1/subscriptions", {"results": {"t" + LONE: "accept"}}, "results"),
        ("POST", "/admin/v1/merchants", {"code": "m-2", "name": "食堂" + LONE}, "name"),
        ("POST", "/admin/v1/policies", {"policy": {"name": "x", "description": LONE}}, "policy"),
        ("PATCH", "/admin/v1/users/dev_alice/contact", {"oa_openid": "o" + LONE}, "oa_openid"),
    ],
)
def test_each_string_field_refuses_a_lone_surrogate(client, tenant, method, url, body, field):
    headers = {**tenant.admin, **login(client, tenant), "X-Huiliu-Appid": tenant.appid}
    resp = client.open(url, method=method, json=body, headers=headers)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert field in resp.get_json()["error"]["message"]
    assert "surrogate" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("where", ["type", "props_value", "props_key", "null_char"])
def test_one_bad_string_rejects_only_its_event(app, client, tenant, clock, where):
    h = login(client, tenant)
    now = clock.now_ms()
    bad = {"id": "e2", "type": "custom:x", "ts": now, "props": {}}
    if where == "type":
        bad["type"] = "custom:" + LONE
    elif where == "props_value":
        bad["props"] = {"page": "x" + LONE}
    elif where == "props_key":
        bad["props"] = {LONE: 1}
    else:
        bad["type"] = "custom:a\x00b"
    events = [
        {"id": "e1", "type": "app_open", "ts": now},
        bad,
        {"id": "e3", "type": "page_view", "ts": now, "props": {"page": "首页"}},
    ]
    resp = client.post("/mp/v1/events", json={"events": events}, headers=h)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    out = resp.get_json()
    assert out["accepted"] == 2 and [r["index"] for r in out["rejected"]] == [1]
    assert ("type" if where in ("type", "null_char") else "props") in out["rejected"][0]["error"]
    # the phone's retry of the same batch stores nothing twice and still rejects only that one
    again = client.post("/mp/v1/events", json={"events": events}, headers=h).get_json()
    assert again["duplicates"] == 2 and [r["index"] for r in again["rejected"]] == [1]


def test_an_imported_user_with_a_lone_surrogate_is_rejected_alone(client, tenant, clock):
    now = clock.now_ms()
    events = [
        {"user": "u1", "id": "i1", "type": "app_open", "ts": now - 86_400_000},
        {"user": "u" + LONE, "id": "i2", "type": "app_open", "ts": now - 86_400_000},
    ]
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    out = resp.get_json()
    assert out["accepted"] == 1 and out["rejected"][0]["index"] == 1
    assert "user" in out["rejected"][0]["error"]


def test_a_flow_style_policy_round_trips(app, client, tenant, clock):
    assert FLOW_POLICY.startswith("{")
    with pytest.raises(ValueError):
        json.loads(FLOW_POLICY)  # YAML, not JSON: the old loader read it back as JSON
    resp = client.post(
        "/admin/v1/policies", json={"source": FLOW_POLICY, "active": True}, headers=tenant.admin
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["source"] == FLOW_POLICY
    listed = client.get("/admin/v1/policies", headers=tenant.admin)
    assert listed.status_code == 200
    assert [p["name"] for p in listed.get_json()["policies"]] == ["payment_failed"]
    one = client.get("/admin/v1/policies/payment_failed", headers=tenant.admin)
    assert one.status_code == 200 and one.get_json()["trigger"] == "payment_failed"
    put = client.put(
        "/admin/v1/policies/payment_failed",
        json={"source": FLOW_POLICY.replace("holdout_share: 0.1", "holdout_share: 0.2")},
        headers=tenant.admin,
    )
    assert put.status_code == 200 and put.get_json()["holdout_share"] == 0.2
    h = login(client, tenant)
    event = {"id": "pf-1", "type": "payment_failed", "ts": clock.now_ms() - 60_000}
    resp = client.post("/mp/v1/events", json={"events": [event]}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1


def test_a_flow_style_row_stored_by_an_older_version_loads(app, client, tenant, clock):
    from backend.services import policies
    from backend.store.models import Policy as PolicyRow

    with app.app_context():
        PolicyRow.create(
            tenant=tenant.id,
            name="payment_failed",
            source=FLOW_POLICY,
            active=True,
            created_ms=clock.now_ms(),
            updated_ms=clock.now_ms(),
        )
        [(row, policy)] = policies.active_rows(tenant.id, trigger=True)
        assert policy.trigger == "payment_failed" and row.name == "payment_failed"
    assert client.get("/admin/v1/policies", headers=tenant.admin).status_code == 200
    h = login(client, tenant)
    event = {"id": "pf-1", "type": "payment_failed", "ts": clock.now_ms() - 60_000}
    assert client.post("/mp/v1/events", json={"events": [event]}, headers=h).status_code == 200


def test_a_stored_row_the_parser_now_refuses_does_not_break_the_list(app, client, tenant, clock):
    from backend.store.models import Policy as PolicyRow

    with app.app_context():
        PolicyRow.create(
            tenant=tenant.id,
            name="old",
            source=LAUGHS,
            active=False,
            created_ms=clock.now_ms(),
            updated_ms=clock.now_ms(),
        )
    listed = client.get("/admin/v1/policies", headers=tenant.admin)
    assert listed.status_code == 200
    assert "aliases are expanded" in listed.get_json()["policies"][0]["error"]
    on = client.post("/admin/v1/policies/old/activate", headers=tenant.admin)
    assert on.status_code == 409 and on.get_json()["error"]["code"] == "policy_unreadable"


def test_a_policy_that_does_not_load_as_stored_is_not_committed(app, client, tenant, monkeypatch):
    """Create and replace write and load back in one transaction: a failure leaves no row."""
    from backend.services import policies
    from backend.store.models import Policy as PolicyRow

    def broken(row):
        raise RuntimeError("cannot load what was stored")

    monkeypatch.setattr(policies, "loaded", broken)
    resp = client.post("/admin/v1/policies", json={"source": POLICY}, headers=tenant.admin)
    assert resp.status_code == 500
    with app.app_context():
        assert PolicyRow.select().count() == 0
    monkeypatch.undo()
    assert (
        client.post("/admin/v1/policies", json={"source": POLICY}, headers=tenant.admin).status_code
        == 201
    )
    monkeypatch.setattr(policies, "loaded", broken)
    changed = POLICY.replace("holdout_share: 0.3", "holdout_share: 0.2")
    resp = client.put("/admin/v1/policies/comeback", json={"source": changed}, headers=tenant.admin)
    assert resp.status_code == 500
    with app.app_context():
        row = PolicyRow.get()
        assert row.version == 1 and row.source == POLICY


def test_a_validation_error_does_not_echo_a_huge_value(client, tenant):
    """The message names the problem; a megabyte value is not sent back whole."""
    body = json.dumps({"code": [1] * 200_000})
    resp = client.post(
        "/mp/v1/login",
        data=body,
        content_type="application/json",
        headers={"X-Huiliu-Appid": tenant.appid},
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["message"].startswith("code: ")
    assert len(resp.get_data()) < 1_000
