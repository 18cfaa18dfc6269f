"""Live-mode login: the real wechatpy client, over real HTTP, against the fake WeChat server.

Nothing is mocked: the app exchanges each code with `fake_wechat` exactly as it would with
api.weixin.qq.com, and the tests check what a mini-program (or an operator) would see.
"""

from __future__ import annotations

import logging
import socket

import pytest
from helpers.app import build_app, close_app, make_tenant

from backend.services.wechat import make_client
from backend.store import db as store_db
from fake_wechat.server import LOGIN_PATH, FakeWeChat

APPID = "wxtest00000000001"
SECRET = "live-test-app-secret"


@pytest.fixture
def fake():
    with FakeWeChat(APPID, SECRET) as server:
        yield server


@pytest.fixture
def make_live_app(db_url, clock):
    """Builds live-mode apps on the test's database; each is one backend worker."""
    apps = []

    def make(api_base: str, secret: str = SECRET, *, fresh_db: bool = True):
        app = build_app(
            db_url,
            clock,
            fresh_db=fresh_db,
            WECHAT_MODE="live",
            WECHAT_APPID=APPID,
            WECHAT_SECRET=secret,
            WECHAT_API_BASE=api_base,
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def live(make_live_app, fake):
    """A live-mode app talking to the fake, with the fake's mini-program as its tenant."""
    app = make_live_app(fake.base_url)
    return app.test_client(), make_tenant(app, APPID)


def _login(client, code: str, appid: str = APPID):
    return client.post("/mp/v1/login", json={"code": code}, headers={"X-Huiliu-Appid": appid})


def _error(resp) -> str:
    return resp.get_json()["error"]["code"]


def test_login_returns_a_token_that_opens_the_wallet(live, fake):
    client, _ = live
    resp = _login(client, "ok_alice")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["expires_in"] == 7200
    wallet = client.get("/mp/v1/coupons", headers={"Authorization": f"Bearer {body['token']}"})
    assert wallet.status_code == 200
    assert wallet.get_json() == {"coupons": []}
    (sent,) = fake.requests_to(LOGIN_PATH)
    assert sent.query["appid"] == APPID
    assert sent.query["secret"] == SECRET
    assert sent.query["js_code"] == "ok_alice"
    assert sent.query["grant_type"] == "authorization_code"


def test_login_finds_the_tenant_from_wechats_referer(live):
    client, _ = live
    resp = client.post(
        "/mp/v1/login",
        json={"code": "ok_referer"},
        headers={"Referer": f"https://servicewechat.com/{APPID}/7/page-frame.html"},
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["token"]


def test_session_key_never_leaves_the_backend(live, fake, caplog):
    client, tenant = live
    # Even with every logger at DEBUG (an operator chasing a bug) the key is not written.
    for name in (None, "urllib3", "peewee"):
        caplog.set_level(logging.DEBUG, logger=name)
    resp = _login(client, "ok_bob")
    assert resp.status_code == 200, resp.get_json()
    (session_key,) = fake.session_keys
    profile = client.get("/admin/v1/users/o_ok_bob", headers=tenant.admin)
    assert profile.status_code == 200
    assert "jscode2session" in caplog.text  # the exchange itself was logged and searched
    for text in (resp.get_data(as_text=True), profile.get_data(as_text=True), caplog.text):
        assert session_key not in text
    # At the app's own log level (INFO) the app secret is not written to the logs either.
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and SECRET in r.getMessage()]


def test_the_user_is_stored_under_wechats_openid(live):
    client, tenant = live
    assert _login(client, "ok_carol").status_code == 200
    profile = client.get("/admin/v1/users/o_ok_carol", headers=tenant.admin)
    assert profile.status_code == 200
    assert profile.get_json()["openid"] == "o_ok_carol"
    assert profile.get_json()["unionid"] is None
    # The code itself is not an identity: nobody is stored under it.
    assert client.get("/admin/v1/users/ok_carol", headers=tenant.admin).status_code == 404


def test_unionid_is_stored_when_wechat_gives_one(live):
    client, tenant = live
    assert _login(client, "union_dave").status_code == 200
    profile = client.get("/admin/v1/users/o_union_dave", headers=tenant.admin).get_json()
    assert profile["unionid"] == "u_dave"


def test_unionid_given_on_a_later_login_is_added_to_the_same_user(live, fake):
    client, tenant = live
    fake.script("first_code", openid="o_erin")
    fake.script("later_code", openid="o_erin", unionid="u_erin")
    first = _login(client, "first_code")
    assert first.status_code == 200
    assert client.get("/admin/v1/users/o_erin", headers=tenant.admin).get_json()["unionid"] is None
    later = _login(client, "later_code")
    assert later.status_code == 200
    profile = client.get("/admin/v1/users/o_erin", headers=tenant.admin).get_json()
    assert profile["unionid"] == "u_erin"
    # Still one user: what the first token sees is what the second sees.
    wallets = [
        client.get("/mp/v1/coupons", headers={"Authorization": f"Bearer {r.get_json()['token']}"})
        for r in (first, later)
    ]
    assert [w.status_code for w in wallets] == [200, 200]


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("bad_code", 400, "invalid_code"),
        ("busy_code", 503, "wechat_busy"),
        ("limit_code", 429, "wechat_rate_limited"),
        ("blocked_code", 403, "user_blocked"),
        ("http500_code", 502, "wechat_error"),
        ("drop_code", 503, "wechat_unreachable"),
    ],
)
def test_wechat_failures_become_errors_the_mini_program_can_act_on(live, code, status, error):
    client, tenant = live
    resp = _login(client, code)
    assert resp.status_code == status, resp.get_json()
    assert _error(resp) == error
    assert "token" not in resp.get_json()
    assert client.get(f"/admin/v1/users/o_{code}", headers=tenant.admin).status_code == 404


def test_a_code_works_only_once(live):
    client, _ = live
    assert _login(client, "ok_frank").status_code == 200
    again = _login(client, "ok_frank")
    assert again.status_code == 400
    assert _error(again) == "code_used"
    # A fresh code from wx.login works again.
    assert _login(client, "ok_frank_2").status_code == 200


def test_unreachable_wechat_is_a_retryable_503(live, fake):
    client, _ = live
    fake.stop()
    resp = _login(client, "ok_grace")
    assert resp.status_code == 503
    assert _error(resp) == "wechat_unreachable"


def test_nothing_listening_at_the_api_base_is_a_503(make_live_app):
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_live_app(f"http://127.0.0.1:{port}/")
    make_tenant(app, APPID)
    resp = _login(app.test_client(), "ok_heidi")
    assert resp.status_code == 503
    assert _error(resp) == "wechat_unreachable"


def test_a_wrong_app_secret_fails_the_login_without_issuing_anything(make_live_app, fake):
    app = make_live_app(fake.base_url, secret="not-the-secret")
    tenant = make_tenant(app, APPID)
    client = app.test_client()
    resp = _login(client, "ok_ivan")
    assert resp.status_code == 502
    assert _error(resp) == "wechat_error"
    assert "token" not in resp.get_json()
    assert "not-the-secret" not in resp.get_data(as_text=True)
    assert fake.token_fetches == 0
    assert client.get("/admin/v1/users/o_ok_ivan", headers=tenant.admin).status_code == 404


def test_login_does_not_depend_on_the_access_token(live, fake):
    client, _ = live
    assert _login(client, "ok_judy").status_code == 200
    (sent,) = fake.requests_to(LOGIN_PATH)
    assert "access_token" not in sent.query
    assert fake.token_fetches == 0


def test_the_access_token_is_fetched_once_and_shared_by_workers(make_live_app, fake, clock):
    app = make_live_app(fake.base_url)
    with app.app_context():
        # Two workers' clients on one database: the second reuses the stored token, since
        # every fetch would invalidate the token the first worker holds.
        first = make_client(APPID, SECRET, fake.base_url, clock)
        second = make_client(APPID, SECRET, fake.base_url, clock)
        token = first.access_token
        assert second.access_token == token
    assert fake.token_fetches == 1
    assert fake.token_valid(token)


def _in_threads(app, calls):
    """Run each call on its own thread in an app context with its own connection."""
    import threading

    results, errors = [None] * len(calls), []
    start = threading.Barrier(len(calls))

    def run(i, call):
        with app.app_context():
            store_db.database.connect(reuse_if_open=True)
            try:
                start.wait()
                results[i] = call()
            except Exception as exc:  # reported below, so a failure is not swallowed
                errors.append(exc)
            finally:
                store_db.database.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors, errors
    return results


def test_workers_needing_a_token_at_once_fetch_it_once(make_live_app, fake, clock):
    # Every fetch invalidates the previous token: four workers starting together must not
    # each fetch one, or three of them would hold a token about to die.
    app = make_live_app(fake.base_url)
    with app.app_context():
        clients = [make_client(APPID, SECRET, fake.base_url, clock) for _ in range(4)]
    tokens = _in_threads(app, [lambda c=c: c.access_token for c in clients])
    assert fake.token_fetches == 1
    assert len(set(tokens)) == 1 and fake.token_valid(tokens[0])


def test_a_rejected_token_is_replaced_once_for_all_workers(make_live_app, fake, clock):
    app = make_live_app(fake.base_url)
    with app.app_context():
        clients = [make_client(APPID, SECRET, fake.base_url, clock) for _ in range(3)]
        rejected = clients[0].access_token
    assert fake.token_fetches == 1
    # All three were refused with the same token (40001) and refresh at once.
    _in_threads(app, [lambda c=c: c.fetch_access_token(replacing=rejected) for c in clients])
    assert fake.token_fetches == 2
    with app.app_context():
        fresh = {c.access_token for c in clients}
    assert len(fresh) == 1 and rejected not in fresh


def test_an_appid_without_a_tenant_is_404_and_wechat_is_not_asked(live, fake):
    client, _ = live
    resp = _login(client, "ok_kim", appid="wxnotregistered01")
    assert resp.status_code == 404
    assert _error(resp) == "unknown_app"
    assert fake.requests == []


def test_a_tenant_without_wechat_credentials_is_refused_before_calling_wechat(live, fake):
    client, _ = live
    make_tenant(client.application, "wxtest00000000002")
    resp = _login(client, "ok_leo", appid="wxtest00000000002")
    assert resp.status_code == 502
    assert _error(resp) == "wechat_not_configured"
    assert fake.requests == []


def test_a_wechat_that_never_answers_is_a_503_not_a_stuck_worker(make_live_app, fake, clock):
    from backend.errors import ApiError
    from backend.services.wechat import code_to_session

    app = make_live_app(fake.base_url)
    with app.app_context():
        client = make_client(APPID, SECRET, fake.base_url, clock, timeout=0.3)
        with pytest.raises(ApiError) as err:
            code_to_session(client, "hang_zoe")
    assert (err.value.status, err.value.code) == (503, "wechat_unreachable")
