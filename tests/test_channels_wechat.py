"""Delivery through the real wechatpy client, over real HTTP, against the fake WeChat server.

One test per row of the error table in shared/domain/WECHAT_RULES.md. Nothing is mocked: the
campaign job decides touches, delivery sends them with the app's own live-mode clients, and
the fake answers as WeChat does (or as a test scripts it). Each test checks what a merchant
would notice: the touch's status, reason and errcode, what WeChat actually delivered, the
user's allowance in our database, and how often the access token was fetched.

Allowances live in two places and both must agree for a send: our database (the decision and
the pre-send check read it) and WeChat's own (the fake's `grant`), so tests grant both.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest
from helpers.app import T0, TenantInfo, build_app, close_app, make_tenant

from backend.core.calendar import MS_PER_DAY, china_day, day_start_ms
from backend.core.clock import FixedClock, from_ms
from backend.services import channel_halts, delivery
from backend.services.campaigns import job
from backend.services.channels import channels_for
from backend.store.models import SubscriptionAllowance, Tenant, Touch, User
from fake_wechat.answers import Script
from fake_wechat.server import SUBSCRIBE_SEND_PATH, TEMPLATE_SEND_PATH, FakeWeChat

APPID = "wxtest00000000001"
SECRET = "channels-test-app-secret"
NOW = int(T0.timestamp() * 1000)  # 18:00 China time
TODAY = int(china_day(NOW))
HOUR_MS = 3_600_000
SAVED = "tmpl_saved"  # the mini-program's subscribe template
OA_ORDER = "tmpl_oa_order"  # the Official Account's template
PAGE = "pages/index/index"
RETRY = delivery.RetryPolicy(base_ms=0, max_attempts=3)

SUBSCRIBE_POLICY = textwrap.dedent(
    """
    name: comeback
    eligibility:
      tiers: [low_frequency, churn_risk, churned]
      min_days_silent: 3
      max_days_silent: 60
    timing:
      lapse_after_days: 3
      send_hour: 10
    holdout_share: 0
    arms:
      - name: care
        touches:
          - {day: 0, channel: subscribe, message: saved}
    messages:
      saved:
        kind: reminder
        template_id: tmpl_saved
        page: pages/index/index
        fields:
          thing1: 你收藏的菜品还在
          date2: "{today}"
    """
)
OA_POLICY = (
    SUBSCRIBE_POLICY.replace("channel: subscribe", "channel: oa_template")
    .replace("template_id: tmpl_saved", f"template_id: {OA_ORDER}")
    .replace("name: comeback", "name: comeback-oa")
)
# Fits for a short shop name; the tenant here is "campus wxtest00000000001", whose first 20
# characters plus the rest make 23 characters, over the 20 a `thing` field may have.
LONG_FIELD_POLICY = SUBSCRIBE_POLICY.replace(
    "thing1: 你收藏的菜品还在", "thing1: '{app_name}想你了'"
)


@dataclass
class Live:
    app: object
    client: object
    tenant: TenantInfo


@pytest.fixture
def fake():
    with FakeWeChat(APPID, SECRET) as server:
        server.add_template(SAVED, ["thing1", "date2"])
        server.add_template(OA_ORDER, ["thing1", "date2"], kind="template")
        yield server


@pytest.fixture
def live(db_url, clock, fake):
    """A live-mode app whose WeChat is the fake; its tenant is the fake's mini-program."""
    app = build_app(
        db_url,
        clock,
        WECHAT_MODE="live",
        WECHAT_APPID=fake.appid,
        WECHAT_SECRET=fake.secret,
        WECHAT_API_BASE=fake.base_url,
        # The Official Account shares the mini-program's appid and secret. Both clients use
        # the one WECHAT_API_BASE, so a second FakeWeChat could never be reached, and a
        # FakeWeChat issues tokens only for its own appid/secret (40013/40125 otherwise).
        # Sharing the appid also shares the cached access token, which is fine here.
        WECHAT_OA_APPID=fake.appid,
        WECHAT_OA_SECRET=fake.secret,
    )
    yield Live(app, app.test_client(), make_tenant(app, APPID))
    close_app(app)


# -- helpers --------------------------------------------------------------------------------------


def openids(n: int) -> list[str]:
    return [f"u{u:03d}" for u in range(n)]


def setup_users(live: Live, fake: FakeWeChat, n: int = 1, *, policy: str = SUBSCRIBE_POLICY):
    """n lapsed users (silent 5 days), the policy, and one allowance each, ours and WeChat's."""
    events = [
        {"user": o, "id": f"e{o}-{k}", "type": "app_open", "ts": NOW - (5 + 3 * k) * MS_PER_DAY}
        for o in openids(n)
        for k in range(3)
    ]
    resp = live.client.post(
        "/admin/v1/events/import", json={"events": events}, headers=live.tenant.admin
    )
    assert resp.status_code == 200 and resp.get_json()["accepted"] == len(events)
    resp = live.client.post(
        "/admin/v1/policies", json={"source": policy, "active": True}, headers=live.tenant.admin
    )
    assert resp.status_code == 201, resp.get_json()
    with live.app.app_context():
        for user in User.select().where(User.tenant == live.tenant.id):
            SubscriptionAllowance.insert(
                tenant=live.tenant.id,
                user=user.id,
                template_id=SAVED,
                remaining=1,
                last_result="accept",
                updated_ms=NOW,
            ).execute()
            fake.grant(user.openid, SAVED)
    return openids(n)


def run_job(live: Live, *, now: int = NOW, day: int = TODAY, deliver: bool = True) -> dict:
    """The campaign job: decide, write the outbox, deliver (with retries that do not wait)."""
    with live.app.app_context():
        channels = channels_for(live.app)

        def send(tenant, now_ms):
            return delivery.deliver_due(tenant, channels, RETRY, clock=FixedClock(from_ms(now_ms)))

        tenant = Tenant.get_by_id(live.tenant.id)
        return job.run(tenant, day, now, deliver=send if deliver else None)


def deliver(live: Live, now: int):
    """A later delivery pass over the outbox (what the next job's delivery step does)."""
    with live.app.app_context():
        tenant = Tenant.get_by_id(live.tenant.id)
        at = FixedClock(from_ms(now))
        return delivery.deliver_due(tenant, channels_for(live.app), RETRY, clock=at)


def touch_of(live: Live, openid: str) -> Touch:
    with live.app.app_context():
        return Touch.select().join(User).where(User.openid == openid).get()


def allowance(live: Live, openid: str) -> int:
    with live.app.app_context():
        return (
            SubscriptionAllowance.select(SubscriptionAllowance.remaining)
            .join(User)
            .where((User.openid == openid) & (SubscriptionAllowance.template_id == SAVED))
            .scalar()
        )


def sends_to(fake: FakeWeChat, openid: str, path: str = SUBSCRIBE_SEND_PATH) -> int:
    """Send requests that reached WeChat for this openid (whatever was answered)."""
    return sum(
        1
        for r in fake.requests_to(path)
        if isinstance(r.body, dict) and r.body.get("touser") == openid
    )


def warm_token(live: Live, fake: FakeWeChat) -> int:
    """Fetch the access token before the job, so a test can count the refreshes it causes."""
    with live.app.app_context():
        assert live.app.extensions["wechat_client"]().access_token
    return fake.token_fetches


def set_oa_openid(live: Live, openid: str, oa_openid: str) -> None:
    resp = live.client.patch(
        f"/admin/v1/users/{openid}/contact",
        json={"oa_openid": oa_openid},
        headers=live.tenant.admin,
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["oa_openid"] == oa_openid


# -- success --------------------------------------------------------------------------------------


def test_a_sent_message_arrives_with_its_data_and_spends_the_allowance(live, fake):
    (alice,) = setup_users(live, fake)
    assert allowance(live, alice) == 1
    out = run_job(live)
    assert (out["queued"], out["sent"], out["failed"]) == (1, 1, 0)
    (sent,) = fake.sent_to(alice)
    touch = touch_of(live, alice)
    # The page carries the touch id, so the mini-program can report the tap (message_open).
    page = f"{PAGE}?touch_id={touch.id}"
    assert (sent.kind, sent.template_id, sent.page) == ("subscribe", SAVED, page)
    assert sent.data == {"thing1": "你收藏的菜品还在", "date2": "2026-03-10"}
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("sent", "", None)
    assert (touch.attempts, touch.sent_ms) == (1, NOW)
    # subscribe/send answers no msgid (template/send does); the touch keeps what WeChat gave.
    assert touch.provider_id == (None if sent.msgid is None else str(sent.msgid))
    assert allowance(live, alice) == 0
    assert fake.allowance(alice, SAVED) == 0
    assert fake.token_fetches == 1
    # The next run sends nothing more: the touch is done and the allowance spent.
    assert run_job(live)["sent"] == 0
    assert sends_to(fake, alice) == 1


# -- 43101: no allowance left ---------------------------------------------------------------------


def test_43101_sets_our_allowance_to_zero_and_is_not_retried(live, fake):
    (alice,) = setup_users(live, fake)
    fake.script_send(alice, Script(errcode=43101), Script())  # a retry would be answered ok
    out = run_job(live)
    assert (out["sent"], out["failed"]) == (0, 1)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("failed", "no_allowance", 43101)
    assert allowance(live, alice) == 0
    assert sends_to(fake, alice) == 1
    assert fake.sent == []


# -- 47003: bad template data ---------------------------------------------------------------------


def test_47003_fails_the_touch_and_is_not_retried(live, fake):
    (alice,) = setup_users(live, fake)
    # The template's first keyword is really a `phrase` (at most 5 Chinese characters), though
    # the merchant's policy calls it thing1: our check passes, WeChat refuses the value.
    fake.add_template(SAVED, {"thing1": "phrase", "date2": None})
    out = run_job(live)
    assert (out["sent"], out["failed"]) == (0, 1)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == (
        "failed",
        "bad_template_data",
        47003,
    )
    assert sends_to(fake, alice) == 1
    assert fake.sent == []
    assert allowance(live, alice) == 1  # a refused send spends nothing, here or at WeChat
    assert fake.allowance(alice, SAVED) == 1


# -- 40003 / 40037 / 41030: bad openid, template, page --------------------------------------------


def _foreign_openid(fake, openid):  # an openid of another app: WeChat does not know it
    fake.openid_rule = lambda o: o != openid


def _unknown_template(fake, openid):  # the template was deleted from the mini-program
    del fake.templates[SAVED]


def _missing_page(fake, openid):  # the page was removed in a new release of the mini-program
    fake.pages = {"pages/home/index"}


@pytest.mark.parametrize(
    ("errcode", "reason", "breakage"),
    [
        (40003, "bad_openid", _foreign_openid),
        (40037, "bad_template", _unknown_template),
        (41030, "bad_page", _missing_page),
    ],
)
def test_id_and_page_errors_fail_the_touch_and_are_not_retried(
    live, fake, errcode, reason, breakage
):
    (alice,) = setup_users(live, fake)
    breakage(fake, alice)
    out = run_job(live)
    assert (out["sent"], out["failed"]) == (0, 1)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("failed", reason, errcode)
    assert touch.attempts == 1
    assert sends_to(fake, alice) == 1
    assert fake.sent == []
    assert allowance(live, alice) == 1


# -- 40001 / 42001: the access token --------------------------------------------------------------


@pytest.mark.parametrize("rejection", ["scripted_40001", "expired_42001"])
def test_a_rejected_token_is_refreshed_once_and_the_message_sent_once(live, fake, rejection):
    (alice,) = setup_users(live, fake)
    fetches = warm_token(live, fake)
    if rejection == "scripted_40001":
        fake.script_send(alice, Script(errcode=40001))
    else:  # WeChat expired the token while our cache still holds it
        fake.expire_token()
    out = run_job(live)
    assert out["sent"] == 1
    assert fake.token_fetches == fetches + 1
    assert len(fake.sent_to(alice)) == 1
    assert sends_to(fake, alice) == 2  # the rejected one and the one after the refresh
    touch = touch_of(live, alice)
    assert (touch.status, touch.attempts) == ("sent", 1)
    assert allowance(live, alice) == 0


def test_a_token_rejected_twice_fails_after_exactly_one_refresh(live, fake):
    (alice,) = setup_users(live, fake)
    fetches = warm_token(live, fake)
    # Were the touch retried, the third request would be answered normally and sent.
    fake.script_send(alice, Script(errcode=40001), Script(errcode=40001))
    out = run_job(live)
    assert (out["sent"], out["failed"]) == (0, 1)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("failed", "token_rejected", 40001)
    assert fake.token_fetches == fetches + 1
    assert sends_to(fake, alice) == 2
    assert fake.sent == []
    assert allowance(live, alice) == 1


# -- 45011: per-minute limit ----------------------------------------------------------------------


def test_45011_backs_off_and_is_sent_on_the_retry(live, fake):
    (alice,) = setup_users(live, fake)
    fake.script_send(alice, Script(errcode=45011))
    out = run_job(live)
    assert (out["sent"], out["failed"], out["deferred"]) == (1, 0, 0)
    touch = touch_of(live, alice)
    assert (touch.status, touch.attempts, touch.reason) == ("sent", 2, "")
    assert sends_to(fake, alice) == 2
    assert len(fake.sent_to(alice)) == 1
    assert allowance(live, alice) == 0


def test_a_touch_sent_after_a_retry_carries_no_stale_errcode(live, fake):
    """The admin touch list shows status, reason and wechat_errcode: a sent touch whose
    reason was cleared should not still show the 45011 of a failed earlier attempt."""
    (alice,) = setup_users(live, fake)
    fake.script_send(alice, Script(errcode=45011))
    run_job(live)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason) == ("sent", "")
    assert touch.wechat_errcode is None


# -- 45009: daily limit ---------------------------------------------------------------------------


def test_45009_halts_the_channel_until_china_midnight_and_the_touch_waits(live, fake, clock):
    alice, bob = setup_users(live, fake, 2)
    run_job(live, deliver=False)
    first, second = sorted((alice, bob), key=lambda o: touch_of(live, o).id)  # delivery order
    fake.script_send(first, Script(errcode=45009))

    out = deliver(live, NOW)
    assert (out["sent"], out["failed"], out["deferred"]) == (0, 0, 2)
    midnight = day_start_ms(TODAY + 1)
    with live.app.app_context():
        assert channel_halts.halted_until(live.tenant.id, "subscribe", NOW) == midnight
    hit, held = touch_of(live, first), touch_of(live, second)
    assert (hit.status, hit.reason, hit.wechat_errcode) == ("queued", "daily_quota", 45009)
    assert (held.status, held.reason) == ("queued", "channel_halted")
    assert hit.next_attempt_ms == held.next_attempt_ms == midnight
    assert (sends_to(fake, first), sends_to(fake, second)) == (1, 0)

    # The next run later the same day: nothing goes to WeChat on this channel.
    clock.advance(hours=3)  # 21:00 China time
    later = run_job(live, now=NOW + 3 * HOUR_MS)
    assert (later["queued"], later["sent"], later["deferred"]) == (0, 0, 2)
    assert len(fake.requests_to(SUBSCRIBE_SEND_PATH)) == 1

    # The next morning's run (after midnight and the quiet hours, before the touches expire).
    clock.advance(hours=12)  # 09:00 China time
    morning = run_job(live, now=NOW + 15 * HOUR_MS, day=TODAY + 1)
    assert (morning["queued"], morning["sent"], morning["failed"]) == (0, 2, 0)
    assert morning["deferred"] == 0
    assert len(fake.sent_to(alice)) == len(fake.sent_to(bob)) == 1
    assert [touch_of(live, o).status for o in (alice, bob)] == ["sent", "sent"]
    assert allowance(live, alice) == allowance(live, bob) == 0


# -- 43107: sending banned ------------------------------------------------------------------------


def test_43107_halts_the_channel_and_holds_every_later_touch(live, fake, clock):
    users = setup_users(live, fake, 3)
    run_job(live, deliver=False)
    by_id = sorted(users, key=lambda o: touch_of(live, o).id)
    banned, others = by_id[0], by_id[1:]
    fake.script_send(banned, Script(errcode=43107))

    out = deliver(live, NOW)
    assert (out["sent"], out["failed"], out["deferred"]) == (0, 0, 3)
    touch = touch_of(live, banned)
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("queued", "sending_banned", 43107)
    for openid in others:
        held = touch_of(live, openid)
        assert (held.status, held.reason) == ("queued", "channel_halted")
        assert sends_to(fake, openid) == 0
    with live.app.app_context():
        assert channel_halts.halted_until(live.tenant.id, "subscribe", NOW) is not None

    clock.advance(hours=2)  # still halted: the next run sends nothing
    again = run_job(live, now=NOW + 2 * HOUR_MS)
    assert (again["queued"], again["sent"], again["deferred"]) == (0, 0, 3)
    assert len(fake.requests_to(SUBSCRIBE_SEND_PATH)) == 1
    assert fake.sent == []
    assert all(allowance(live, o) == 1 for o in users)


# -- -1, a dropped connection, HTTP 500: WeChat busy or unreachable -------------------------------

TRANSIENT = [
    pytest.param(Script(errcode=-1), "wechat_busy", -1, id="errcode-1"),
    pytest.param(Script(drop=True), "network", None, id="dropped"),
    pytest.param(Script(http_status=500), "http_error", None, id="http500"),
]


@pytest.mark.parametrize(("failure", "reason", "errcode"), TRANSIENT)
def test_a_busy_wechat_is_retried_then_failed_never_lost(live, fake, failure, reason, errcode):
    (alice,) = setup_users(live, fake)
    fake.script_send(alice, *[failure] * RETRY.max_attempts, Script())
    out = run_job(live)
    assert (out["sent"], out["failed"], out["deferred"]) == (0, 1, 0)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("failed", reason, errcode)
    assert touch.attempts == RETRY.max_attempts
    assert sends_to(fake, alice) == RETRY.max_attempts
    assert fake.sent == []
    assert allowance(live, alice) == 1


@pytest.mark.parametrize(("failure", "reason", "errcode"), TRANSIENT)
def test_a_busy_wechat_then_success_sends_exactly_once(live, fake, failure, reason, errcode):
    (alice,) = setup_users(live, fake)
    fake.script_send(alice, failure)
    out = run_job(live)
    assert (out["sent"], out["failed"], out["deferred"]) == (1, 0, 0)
    touch = touch_of(live, alice)
    assert (touch.status, touch.attempts) == ("sent", 2)
    assert sends_to(fake, alice) == 2
    assert len(fake.sent_to(alice)) == 1
    assert allowance(live, alice) == 0
    assert fake.allowance(alice, SAVED) == 0


# -- Official Account template messages -----------------------------------------------------------


def test_an_oa_template_reaches_a_follower(live, fake):
    (alice,) = setup_users(live, fake, policy=OA_POLICY)
    set_oa_openid(live, alice, "oa_alice")
    fake.follow("oa_alice")
    out = run_job(live)
    assert (out["queued"], out["sent"]) == (1, 1)
    (sent,) = fake.sent_to("oa_alice")
    assert (sent.kind, sent.template_id) == ("template", OA_ORDER)
    assert sent.data == {"thing1": "你收藏的菜品还在", "date2": "2026-03-10"}
    touch = touch_of(live, alice)
    assert sent.miniprogram == {"appid": APPID, "pagepath": f"{PAGE}?touch_id={touch.id}"}
    assert (touch.status, touch.channel, touch.provider_id) == (
        "sent",
        "oa_template",
        str(sent.msgid),
    )
    assert fake.sent_to(alice) == []  # nothing went to the mini-program openid
    assert allowance(live, alice) == 1  # an OA message spends no subscribe allowance


def test_an_oa_template_to_a_non_follower_fails_not_follower(live, fake):
    (alice,) = setup_users(live, fake, policy=OA_POLICY)
    set_oa_openid(live, alice, "oa_alice")  # known to us, but no longer following
    out = run_job(live)
    assert (out["queued"], out["sent"], out["failed"]) == (1, 0, 1)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == ("failed", "not_follower", 43004)
    assert sends_to(fake, "oa_alice", TEMPLATE_SEND_PATH) == 1
    assert fake.sent == []


# -- a field over WeChat's limits, caught before sending ------------------------------------------


def test_a_field_over_wechats_limits_is_caught_before_sending(live, fake):
    (alice,) = setup_users(live, fake, policy=LONG_FIELD_POLICY)
    out = run_job(live)
    assert (out["queued"], out["sent"], out["failed"]) == (1, 0, 1)
    touch = touch_of(live, alice)
    assert (touch.status, touch.reason, touch.wechat_errcode) == (
        "failed",
        "bad_template_data",
        None,
    )
    assert fake.requests_to(SUBSCRIBE_SEND_PATH) == []
    assert fake.token_fetches == 0  # WeChat was not even asked for a token
    assert allowance(live, alice) == 1
