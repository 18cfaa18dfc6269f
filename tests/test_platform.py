"""Health, the OpenAPI document, JSON errors, size limits, tokens, tenancy and migrations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.app import login
from itsdangerous import URLSafeSerializer

from backend.app import create_app
from backend.store import db as store_db
from backend.store.migrations import LATEST, SchemaTooNew, current_version, migrate
from backend.store.models import SchemaVersion
from backend.web.auth import TOKEN_SALT

ROOT = Path(__file__).resolve().parent.parent


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_openapi_documents_every_route_with_schemas(client, app):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if rule.endpoint.startswith("dashboard."):  # HTML pages for people (docs/dashboard.md)
            assert path not in doc["paths"], path
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
            op = doc["paths"][path][method.lower()]
            assert op["summary"] != "UNDOCUMENTED", path
            assert op["responses"], path
            if "requestBody" in op:  # too large, stalled or cut short, wherever a body is read
                assert {"400", "408", "413"} <= set(op["responses"]), (path, method)
            if "429" in op["responses"]:
                assert "Retry-After" in op["responses"]["429"]["headers"], (path, method)
    events = doc["paths"]["/mp/v1/events"]["post"]
    item = events["requestBody"]["content"]["application/json"]["schema"]["properties"]["events"]
    assert item["maxItems"] == 500
    assert set(item["items"]["required"]) == {"id", "type", "ts"}
    assert "429" in doc["paths"]["/mp/v1/login"]["post"]["responses"]  # the header's checked
    redeem = doc["paths"]["/mp/v1/coupons/{coupon_id}/redeem"]["post"]
    assert redeem["parameters"][0]["schema"]["type"] == "integer"


def test_unknown_route_and_wrong_method_are_json(client):
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    resp = client.get("/mp/v1/login")
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"


def test_malformed_json_is_400_json(client, tenant):
    for raw in [b"{", b"not json", b"\xff\xfe", b""]:
        resp = client.post(
            "/mp/v1/login",
            data=raw,
            headers={"X-Huiliu-Appid": tenant.appid, "Content-Type": "application/json"},
        )
        assert resp.status_code == 400
        assert resp.get_json()["error"]["code"] in ("malformed_json", "empty_body")


def test_oversized_body_is_413_json(client, tenant):
    h = login(client, tenant)
    big = b'{"events": [], "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    resp = client.post("/mp/v1/events", data=big, headers={**h, "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"


def test_login_validation_and_unknown_app(client, tenant):
    resp = client.post("/mp/v1/login", json={"code": 123}, headers={"X-Huiliu-Appid": tenant.appid})
    assert resp.status_code == 400 and "code" in resp.get_json()["error"]["message"]
    resp = client.post("/mp/v1/login", json={"code": "x"}, headers={"X-Huiliu-Appid": "wxnobody"})
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "unknown_app"


def test_login_tenant_from_wechat_referer(client, tenant):
    referer = f"https://servicewechat.com/{tenant.appid}/12/page-frame.html"
    resp = client.post("/mp/v1/login", json={"code": "bob"}, headers={"Referer": referer})
    assert resp.status_code == 200
    assert resp.get_json()["expires_in"] == 7200


def test_expired_token_is_refused(client, tenant, clock):
    h = login(client, tenant)
    assert client.get("/mp/v1/coupons", headers=h).status_code == 200
    clock.advance(seconds=7201)
    resp = client.get("/mp/v1/coupons", headers=h)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "token_expired"


def test_tampered_token_is_refused(client, tenant):
    token = login(client, tenant)["Authorization"].split()[1]
    # Same payload shape signed with another key, and the real token with one character changed.
    forged = URLSafeSerializer("not-the-secret", salt=TOKEN_SALT).dumps(
        {"t": tenant.id, "u": 1, "exp": 4_000_000_000}
    )
    # A character in the middle of the signature: the last one may only carry unused padding
    # bits of the base64, so changing it can leave the signature valid.
    i = token.rindex(".") + 5
    flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    for bad in (forged, flipped):
        resp = client.get("/mp/v1/coupons", headers={"Authorization": f"Bearer {bad}"})
        assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


def test_tenant_a_key_cannot_see_or_change_tenant_b(client, tenant, other_tenant):
    # Tenant B has a user, a template and a coupon.
    login(client, other_tenant, "bob")
    t = client.post(
        "/admin/v1/coupon-templates",
        headers=other_tenant.admin,
        json={"name": "B", "amount_off_fen": 100, "validity_days": 1, "budget": 5},
    ).get_json()
    a = tenant.admin
    assert client.get("/admin/v1/users/dev_bob", headers=a).status_code == 404
    assert client.get(f"/admin/v1/coupon-templates/{t['id']}", headers=a).status_code == 404
    assert (
        client.patch(
            f"/admin/v1/coupon-templates/{t['id']}", json={"budget": 1}, headers=a
        ).status_code
        == 404
    )
    assert client.delete(f"/admin/v1/coupon-templates/{t['id']}", headers=a).status_code == 404
    assert (
        client.post(
            f"/admin/v1/coupon-templates/{t['id']}/issue", json={"user": "dev_bob"}, headers=a
        ).status_code
        == 404
    )
    assert client.get("/admin/v1/coupon-templates", headers=a).get_json() == {"templates": []}
    assert client.get("/admin/v1/merchants", headers=a).get_json()["merchants"] == [
        {"code": "canteen-1", "name": "canteen-1"}
    ]
    # A tenant A user cannot claim tenant B's template either.
    resp = client.post(
        "/mp/v1/coupons/claim",
        json={"template_id": t["id"]},
        headers=login(client, tenant, "alice"),
    )
    assert resp.status_code == 404
    # Importing into A with B's openid creates A's own user, never touches B's.
    client.post(
        "/admin/v1/events/import",
        headers=a,
        json={
            "events": [
                {"user": "dev_bob", "id": "1", "type": "app_open", "ts": "2026-03-01T10:00:00"}
            ]
        },
    )
    b_user = client.get("/admin/v1/users/dev_bob", headers=other_tenant.admin).get_json()
    assert b_user["events"] == 0
    after = client.get(f"/admin/v1/coupon-templates/{t['id']}", headers=other_tenant.admin)
    assert after.get_json()["budget"] == 5


def test_api_key_checks(client, tenant):
    good = tenant.api_key
    last = "x" if good[-1] != "x" else "y"  # a key ending in x made this test pass it
    for bad in ["", "nonsense", good[:-1] + last, "hl_" + "0" * 8 + "_" + good.split("_", 2)[2]]:
        resp = client.get("/admin/v1/merchants", headers={"X-Api-Key": bad} if bad else {})
        assert resp.status_code == 401, bad


def test_ids_out_of_range_are_404_not_500(client, tenant):
    h = login(client, tenant)
    resp = client.post(
        "/mp/v1/coupons/99999999999999999999/redeem",
        json={"order_id": "o", "order_amount_fen": 1},
        headers=h,
    )
    assert resp.status_code == 404
    resp = client.post("/mp/v1/coupons/claim", json={"template_id": 2**40}, headers=h)
    assert resp.status_code == 400
    assert client.get("/admin/v1/users/a%00b", headers=tenant.admin).status_code == 404


def test_nul_characters_are_refused_not_500(client, tenant):
    h = login(client, tenant)
    body = client.post(
        "/mp/v1/events",
        headers=h,
        json={
            "events": [
                {
                    "id": "a",
                    "type": "search",
                    "ts": "2026-03-10T17:00:00",
                    "props": {"q": "x\x00y"},
                },
                {"id": "b", "type": "search", "ts": "2026-03-10T17:00:00", "props": {"q": "fine"}},
                {"id": "c", "type": "search", "ts": "9999-12-31T23:59:59-23:00"},
            ]
        },
    ).get_json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0, 2]
    resp = client.post(
        "/admin/v1/merchants", json={"code": "a", "name": "x\x00"}, headers=tenant.admin
    )
    assert resp.status_code == 400


def test_init_db_is_idempotent_and_refuses_a_newer_schema(app):
    runner = CliRunner()
    with app.app_context():
        first = runner.invoke(app.cli, ["init-db"], obj=None)
    assert "already at version" in first.output
    with app.app_context():
        assert current_version(store_db.database) == LATEST
        SchemaVersion.create(version=LATEST + 1, applied_ms=0)
        with pytest.raises(SchemaTooNew):
            migrate(store_db.database, 0)


def test_seed_demo_json_prints_a_working_key(app):
    import json

    runner = app.test_cli_runner()
    out = json.loads(runner.invoke(args=["seed-demo", "--json"]).output)
    again = json.loads(runner.invoke(args=["seed-demo", "--json"]).output)
    assert out["appid"] == again["appid"]
    client = app.test_client()
    for key in (out["api_key"], again["api_key"]):
        merchants = client.get("/admin/v1/merchants", headers={"X-Api-Key": key}).get_json()
        assert len(merchants["merchants"]) == 4
    templates = client.get("/admin/v1/coupon-templates", headers={"X-Api-Key": out["api_key"]})
    assert len(templates.get_json()["templates"]) == 4


def test_no_module_reads_the_wall_clock():
    """Every "now" comes from the injected clock (backend/core/clock.py), so simulated days work.

    The one exception is the server's watchdog (backend/web/server.py): it measures how long a
    request has really run, in the machine's time, whatever day the app believes it is.
    """
    offenders = []
    pattern = re.compile(
        r"datetime\.now|datetime\.utcnow|time\.time\(|date\.today|time\.monotonic"
        r"|time\.perf_counter"
    )
    allowed = {ROOT / "backend" / "core" / "clock.py", ROOT / "backend" / "web" / "server.py"}
    for path in (ROOT / "backend").rglob("*.py"):
        if path not in allowed and pattern.search(path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_unsupported_database_url_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported DATABASE_URL"):
        create_app({"DATABASE_URL": "mysql://x/y"})


def test_docs_list_the_whole_event_vocabulary():
    from backend.services.event_validation import VOCABULARY

    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert [t for t in VOCABULARY if f"| `{t}` |" not in doc] == []


def _wait_for(url: str, proc, attempts: int = 200):
    import time

    import requests

    for _ in range(attempts):
        assert proc.poll() is None, "the server exited"
        try:
            return requests.get(url, timeout=1)
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_serve_runs_the_api_under_gunicorn(tmp_path):
    """`python app.py serve` answers over real HTTP (a fresh SQLite file, dev mode)."""
    import os
    import socket
    import subprocess
    import sys

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}"}
    subprocess.run([sys.executable, "app.py", "init-db"], cwd=ROOT, env=env, check=True)
    proc = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_for(f"{base}/healthz", proc).json() == {"status": "ok"}
        spec = requests.get(f"{base}/openapi.json", timeout=5).json()
        assert "/mp/v1/events" in spec["paths"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
