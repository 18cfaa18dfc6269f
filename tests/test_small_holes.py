"""Issue 14's smaller holes, each on SQLite and PostgreSQL on the injected clock: the dashboard
sign-in limit under parallel guesses, sign-out that ends the session on the server, parallel
trial starts against the per-tenant limit, the mini-program login's rate limits, the 413 that
names the limit that applied, the calendar setting, and bounded subscribe allowances."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers.admin_session import csrf_from, sign_in
from helpers.app import build_app, close_app, login, make_tenant

from backend.core.calendar import CALENDAR_FILES
from backend.services import ratelimit, simulations, subscriptions, tenants
from backend.store.db import database
from backend.store.models import KeyValue, SimulationRun, SubscriptionAllowance
from backend.tasks import trials as trial_tasks
from fake_wechat.server import LOGIN_PATH, FakeWeChat


def _signed_out_browser(base: str) -> tuple[requests.Session, str]:
    """A browser on the sign-in page: its cookie and the form's CSRF token."""
    browser = requests.Session()
    page = browser.get(f"{base}/admin/login", timeout=30)
    assert page.status_code == 200
    return browser, csrf_from(page.text)


def _in_parallel(n: int, work) -> list:
    """Run work(i) on n threads released together; their results in order."""
    gate = threading.Barrier(n)

    def run(i: int):
        gate.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


# a. Dashboard sign-in: the limit holds under parallel guesses -----------------------------


def test_parallel_wrong_passwords_get_at_most_the_limit_of_checks(live_server, tenant, monkeypatch):
    from backend.web.dashboard.session import MAX_FAILED_SIGN_INS

    real_check = tenants.check_dashboard_password
    checks = []

    def counting_check(appid: str, password: str):
        checks.append(password)  # list.append is atomic: no lock needed
        return real_check(appid, password)  # the real (slow, scrypt) check

    monkeypatch.setattr(tenants, "check_dashboard_password", counting_check)
    browser, token = _signed_out_browser(live_server)
    cookies = browser.cookies.get_dict()

    def guess(i: int) -> requests.Response:
        form = {"appid": tenant.appid, "password": f"guess number {i}", "csrf_token": token}
        return requests.post(
            f"{live_server}/admin/login",
            data=form,
            cookies=cookies,
            allow_redirects=False,
            timeout=120,
        )

    answers = _in_parallel(40, guess)
    statuses = sorted(r.status_code for r in answers)
    assert len(checks) == MAX_FAILED_SIGN_INS
    assert statuses == [401] * len(checks) + [429] * (40 - len(checks))
    refused = next(r for r in answers if r.status_code == 429)
    assert "尝试次数过多" in refused.text and int(refused.headers["Retry-After"]) > 0


def test_a_successful_sign_in_does_not_count_against_the_limit(app, client, tenant):
    from backend.web.dashboard.session import MAX_FAILED_SIGN_INS

    for _ in range(MAX_FAILED_SIGN_INS - 1):
        assert sign_in(client, "hl_00000000_guess").status_code == 401
    for _ in range(3):  # the right key gives its attempt back, and clears nothing
        assert sign_in(app.test_client(), tenant.api_key).status_code == 302
    assert sign_in(client, "hl_00000000_guess").status_code == 401  # the tenth wrong one
    assert sign_in(client, tenant.api_key).status_code == 429


def test_the_limiter_counts_parallel_attempts_exactly(app):
    with app.app_context():
        now = app.config["CLOCK"].now_ms()

        def attempt(_i: int) -> ratelimit.Reservation:
            with database.connection_context():  # each thread's own connection, returned
                return ratelimit.reserve("test:parallel", 10, 60_000, now)

        slots = _in_parallel(40, attempt)
        assert sorted(s.count for s in slots) == list(range(1, 41))
        assert sum(s.allowed for s in slots) == 10
        ratelimit.refund(slots[0])
        assert ratelimit.count("test:parallel", now) == 39
        # A new window starts at 1, and a refund from the old window leaves it alone.
        later = ratelimit.reserve("test:parallel", 10, 60_000, now + 60_000)
        assert later.count == 1 and later.allowed
        ratelimit.refund(slots[1])
        assert ratelimit.count("test:parallel", now + 60_000) == 1


# b. Sign-out ends the session on the server ------------------------------------------------


def test_a_copied_cookie_is_refused_after_sign_out(app, client, tenant):
    sign_in(client, tenant.api_key)
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    copied = client.get_cookie(cookie_name).value
    thief = app.test_client()
    thief.set_cookie(cookie_name, copied)
    assert thief.get("/admin/").status_code == 200  # the copy works while the session lives
    page = client.get("/admin/").get_data(as_text=True)
    assert client.post("/admin/logout", data={"csrf_token": csrf_from(page)}).status_code == 302
    assert client.get("/admin/").status_code == 302
    resp = thief.get("/admin/")
    assert resp.status_code == 302 and "/admin/login" in resp.headers["Location"]
    assert thief.get("/admin/simulations/1/status").status_code == 401
    with app.app_context():  # and nothing of it is left on the server
        assert KeyValue.select().where(KeyValue.key.startswith("dash-session:")).count() == 0


def test_each_sign_in_is_its_own_server_side_session(app, tenant, clock):
    first, second = app.test_client(), app.test_client()
    sign_in(first, tenant.api_key)
    sign_in(second, tenant.api_key)
    page = first.get("/admin/").get_data(as_text=True)
    first.post("/admin/logout", data={"csrf_token": csrf_from(page)})
    assert first.get("/admin/").status_code == 302
    assert second.get("/admin/").status_code == 200  # another sign-in is not signed out
    # Ended sessions' rows are swept at the next sign-in.
    clock.advance(seconds=app.config["DASHBOARD_SESSION_TTL_S"] + 1)
    third = app.test_client()
    sign_in(third, tenant.api_key)
    with app.app_context():
        assert KeyValue.select().where(KeyValue.key.startswith("dash-session:")).count() == 1


# c. Parallel trial starts launch exactly the limit ---------------------------------------


def test_parallel_trial_starts_launch_exactly_the_limit(app, live_server, tenant, monkeypatch):
    launched = []
    monkeypatch.setattr(trial_tasks, "queue_trial", lambda *a: launched.append(a[-1]))
    # Every start that has counted waits here for the others before it inserts (unless the
    # others are held back by a lock, then it goes on after a while): without the lock all
    # starts count zero running trials, so all would insert.
    n = 12
    gate = threading.Barrier(n)
    real_create = SimulationRun.create

    def create_after_the_others(cls, **fields):
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait(timeout=2)
        return real_create(**fields)

    monkeypatch.setattr(SimulationRun, "create", classmethod(create_after_the_others))
    browser, token = _signed_out_browser(live_server)
    signed = browser.post(
        f"{live_server}/admin/login",
        data={"api_key": tenant.api_key, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert signed.status_code == 302
    page = browser.get(f"{live_server}/admin/simulations", timeout=30).text
    token, cookies = csrf_from(page), browser.cookies.get_dict()

    def start(i: int) -> int:
        resp = requests.post(
            f"{live_server}/admin/simulations",
            data={"policy": "preset:tiered", "seed": str(i), "csrf_token": token},
            cookies=cookies,
            allow_redirects=False,
            timeout=120,
        )
        return resp.status_code

    statuses = sorted(_in_parallel(n, start))
    limit = simulations.MAX_RUNNING_PER_TENANT
    assert statuses == [302] * limit + [429] * (n - limit)
    assert len(launched) == limit
    with app.app_context():
        assert SimulationRun.select().where(SimulationRun.tenant == tenant.id).count() == limit


def test_a_trial_that_cannot_be_queued_frees_its_slot(app, client, tenant, monkeypatch):
    def no_queue(*_args):
        raise ConnectionError("the queue's storage is unreachable")

    monkeypatch.setattr(trial_tasks, "queue_trial", no_queue)
    sign_in(client, tenant.api_key)
    token = csrf_from(client.get("/admin/simulations").get_data(as_text=True))
    for _ in range(simulations.MAX_RUNNING_PER_TENANT + 1):
        resp = client.post(
            "/admin/simulations", data={"policy": "preset:tiered", "csrf_token": token}
        )
        assert resp.status_code == 503 and "无法启动" in resp.get_data(as_text=True)
    with app.app_context():
        assert {r.status for r in SimulationRun.select()} == {"failed"}


# d. Mini-program login: rate limited per address and per tenant ---------------------------

APPID = "wxtest00000000001"
SECRET = "live-test-app-secret"


@pytest.fixture
def fake():
    with FakeWeChat(APPID, SECRET) as server:
        yield server


@pytest.fixture
def live_app(db_url, clock, fake):
    """A live-mode app (real code exchanges with the fake WeChat), with small limits."""
    app = build_app(
        db_url,
        clock,
        WECHAT_MODE="live",
        WECHAT_APPID=APPID,
        WECHAT_SECRET=SECRET,
        WECHAT_API_BASE=fake.base_url,
        LOGIN_PER_ADDRESS_PER_MIN=5,
        LOGIN_FAILURES_PER_ADDRESS_PER_MIN=2,
        LOGIN_FAILURES_PER_TENANT_PER_MIN=3,
    )
    make_tenant(app, APPID)
    yield app
    close_app(app)


def _mp_login(client, code: str, address: str = "10.0.0.1"):
    return client.post(
        "/mp/v1/login",
        json={"code": code},
        headers={"X-Huiliu-Appid": APPID},
        environ_base={"REMOTE_ADDR": address},
    )


def test_logins_from_one_address_are_limited_per_minute(live_app, fake, clock):
    client = live_app.test_client()
    for i in range(5):
        assert _mp_login(client, f"ok_{i}").status_code == 200
    clock.advance(seconds=30)
    resp = _mp_login(client, "ok_5")
    assert resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "rate_limited"
    assert resp.headers["Retry-After"] == "30"
    assert len(fake.requests_to(LOGIN_PATH)) == 5  # WeChat was not asked
    assert _mp_login(client, "ok_6", address="10.0.0.2").status_code == 200  # another address
    clock.advance(seconds=31)  # the window has ended
    assert _mp_login(client, "ok_7").status_code == 200


def test_failed_code_exchanges_are_limited_per_tenant(live_app, fake, clock):
    client = live_app.test_client()
    for i in range(8):  # successes do not count as failures
        assert _mp_login(client, f"ok_{i}", address=f"10.0.1.{i}").status_code == 200
    for i in range(3):
        resp = _mp_login(client, f"bad_{i}", address=f"10.0.2.{i}")
        assert resp.get_json()["error"]["code"] == "invalid_code"
    asked = len(fake.requests_to(LOGIN_PATH))
    # The tenant's failures are used up: junk from any address no longer reaches WeChat.
    for i in range(4):
        resp = _mp_login(client, f"bad_more_{i}", address=f"10.0.3.{i}")
        assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"
        assert int(resp.headers["Retry-After"]) == 60
    assert len(fake.requests_to(LOGIN_PATH)) == asked
    clock.advance(seconds=61)
    assert _mp_login(client, "ok_again", address="10.0.4.1").status_code == 200


def test_one_address_probing_with_junk_codes_stops_before_the_tenant_does(live_app, fake):
    """A single prober spends its own failures, not the tenant's: other addresses still log in
    (the tenant-wide ceiling is for many addresses at once)."""
    client = live_app.test_client()
    statuses = [_mp_login(client, f"bad_{i}", address="10.7.0.1").status_code for i in range(5)]
    assert statuses == [400, 400, 429, 429, 429]
    assert len(fake.requests_to(LOGIN_PATH)) == 2
    # The prober's refused attempts never reached the tenant's count: 2 of 3 are used.
    assert _mp_login(client, "ok_1", address="10.7.0.3").status_code == 200
    assert _mp_login(client, "bad_x", address="10.7.0.2").status_code == 400


def test_an_address_refused_by_the_tenant_breaker_keeps_its_own_failures(live_app, fake, clock):
    """The tenant-wide breaker refusing means no exchange happened: the address's failure
    reservation taken just before is given back, so it is not locked out once the tenant's
    window ends."""
    client = live_app.test_client()
    for i in range(3):  # the tenant's failures are used up by other addresses
        assert _mp_login(client, f"bad_{i}", address=f"10.5.0.{i}").status_code == 400
    clock.advance(seconds=50)
    for i in range(2):  # refused by the tenant, as many as the address's own failure limit
        resp = _mp_login(client, f"bad_refused_{i}", address="10.5.1.1")
        assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"
    asked = len(fake.requests_to(LOGIN_PATH))
    clock.advance(seconds=11)  # the tenant's window has ended, the address's has not
    resp = _mp_login(client, "bad_again", address="10.5.1.1")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_code"
    assert len(fake.requests_to(LOGIN_PATH)) == asked + 1


def test_parallel_junk_logins_reach_wechat_at_most_the_tenant_ceiling(live_app, fake):
    def junk(i: int) -> int:
        with live_app.test_client() as client:
            return _mp_login(client, f"bad_{i}", address=f"10.9.{i}.1").status_code

    statuses = sorted(_in_parallel(20, junk))
    assert statuses == [400] * 3 + [429] * 17
    assert len(fake.requests_to(LOGIN_PATH)) == 3


def test_dev_mode_logins_are_not_limited(app, client, tenant):
    """Dev mode asks WeChat nothing, so there is no quota to protect (the simulator and the
    benches log thousands of users in from one address)."""
    for i in range(app.config["LOGIN_PER_ADDRESS_PER_MIN"] + 5):
        login(client, tenant, code=f"student{i}")


# e. A 413 names the limit that applied -----------------------------------------------------


def test_an_oversized_import_is_told_its_own_limit(app, client, tenant):
    from backend.web.admin.routes import MAX_IMPORT_BODY

    body = b'{"events": [], "pad": "' + b"x" * (MAX_IMPORT_BODY + 1024) + b'"}'
    resp = client.post(
        "/admin/v1/events/import",
        data=body,
        headers={**tenant.admin, "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    message = resp.get_json()["error"]["message"]
    assert str(MAX_IMPORT_BODY) in message and str(app.config["MAX_CONTENT_LENGTH"]) not in message
    # Between the two limits the import reads the body; the mini-program's batch is refused.
    middle = b'{"events": [], "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    resp = client.post(
        "/admin/v1/events/import",
        data=middle,
        headers={**tenant.admin, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    h = login(client, tenant)
    resp = client.post(
        "/mp/v1/events", data=middle, headers={**h, "Content-Type": "application/json"}
    )
    assert resp.status_code == 413
    assert str(app.config["MAX_CONTENT_LENGTH"]) in resp.get_json()["error"]["message"]


# f. The calendar setting names a calendar file ---------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["demo_tenant.yaml", "policies/tiered.yaml", "../seeds/demo_tenant.yaml", "nope.yaml"],
)
def test_the_calendar_setting_accepts_only_calendar_files(client, tenant, name):
    resp = client.patch("/admin/v1/settings", json={"calendar": name}, headers=tenant.admin)
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_settings"
    assert all(allowed in error["message"] for allowed in CALENDAR_FILES)
    assert "calendar" not in client.get("/admin/v1/settings", headers=tenant.admin).get_json()


def test_the_calendar_files_and_inline_breaks_are_accepted(client, tenant):
    for calendar in (*CALENDAR_FILES, {"breaks": []}):
        resp = client.patch("/admin/v1/settings", json={"calendar": calendar}, headers=tenant.admin)
        assert resp.status_code == 200 and resp.get_json()["calendar"] == calendar


@pytest.mark.parametrize("name", ["demo_tenant.yaml", "policies/tiered.yaml", "../README.md"])
def test_a_stored_calendar_name_outside_the_set_is_not_read(name):
    """The loader checks the name too, so a value stored before the settings check cannot
    make the nightly job read another file."""
    from backend.services.scoring import load_calendar

    with pytest.raises(ValueError, match="not one of"):
        load_calendar({"calendar": name})


# g. Subscribe allowances are bounded -------------------------------------------------------


def test_repeated_grants_cannot_inflate_an_allowance(app, client, tenant):
    h = login(client, tenant)
    for i in range(20):
        body = {"id": f"prompt-{i}", "results": {"TPL_A": "accept"}}
        resp = client.post("/mp/v1/subscriptions", json=body, headers=h)
        assert resp.status_code == 200
    assert resp.get_json()["allowances"]["TPL_A"] == subscriptions.MAX_ALLOWANCE
    with app.app_context():
        (row,) = SubscriptionAllowance.select()
        assert row.remaining == subscriptions.MAX_ALLOWANCE
    # ban still zeroes it, and accepts count again from there.
    client.post("/mp/v1/subscriptions", json={"results": {"TPL_A": "ban"}}, headers=h)
    resp = client.post("/mp/v1/subscriptions", json={"results": {"TPL_A": "accept"}}, headers=h)
    assert resp.get_json()["allowances"]["TPL_A"] == 1


def test_a_prompt_names_at_most_three_templates(client, tenant):
    h = login(client, tenant)
    four = {f"TPL_{i}": "accept" for i in range(4)}
    for results in (four, {**four, "errMsg": "requestSubscribeMessage:ok"}):
        resp = client.post("/mp/v1/subscriptions", json={"results": results}, headers=h)
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_request"
    assert client.get("/mp/v1/me/data", headers=h).get_json()["subscriptions"] == []
    three = {f"TPL_{i}": "accept" for i in range(3)}
    resp = client.post(
        "/mp/v1/subscriptions", json={"results": {**three, "errMsg": "ok"}}, headers=h
    )
    assert resp.status_code == 200
    assert resp.get_json()["allowances"] == dict.fromkeys(three, 1)
