"""The fake WeChat's message endpoints, driven by the real wechatpy client over real HTTP.

subscribe/send and template/send must answer as WeChat does (errcodes, errmsg wording with a
request id, allowances, followers, field limits), or the backend's error handling is tested
against a WeChat that does not exist. The client is the backend's own (`make_client`), with its
database token cache and `auto_retry=False`, so every errcode surfaces as WeChat sent it.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from wechatpy.exceptions import APILimitedException, WeChatClientException

from backend.core.clock import SystemClock
from backend.services.wechat import make_client
from fake_wechat.answers import Script
from fake_wechat.records import Sent
from fake_wechat.server import SUBSCRIBE_SEND_PATH, TEMPLATE_SEND_PATH, FakeWeChat

APPID = "wxtest00000000001"
SECRET = "messages-test-app-secret"
ALICE = "o_alice"
COUPON = "tpl_coupon_expiry"  # subscribe: thing1 coupon, time2 expires, amount3 value, phrase4
ORDER = "tpl_order_status"  # Official Account template: thing1, character_string2, keyword3
ALL_TYPES = "tpl_all_types"
RID = re.compile(r", rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


def coupon_data(**override: str) -> dict:
    values = {"thing1": "食堂满减券", "time2": "2026-11-23 10:00", "amount3": "¥5.00"}
    values |= {"phrase4": "即将过期"} | override
    return {key: {"value": value} for key, value in values.items()}


ORDER_DATA = {
    "thing1": {"value": "取餐提醒"},
    "character_string2": {"value": "A1024"},
    "keyword3": {"value": "请到一食堂二楼窗口取餐"},
}


@pytest.fixture
def fake():
    with FakeWeChat(APPID, SECRET) as server:
        server.add_template(COUPON, ["thing1", "time2", "amount3", "phrase4"])
        server.add_template(
            ORDER, {"thing1": None, "character_string2": None, "keyword3": None}, kind="template"
        )
        yield server


@pytest.fixture
def wx(app, fake):
    """The backend's WeChat client for the fake's app, inside the test app's database."""
    with app.app_context():
        yield make_client(APPID, SECRET, fake.base_url, SystemClock())


def _raises(call, *args, **kwargs) -> WeChatClientException:
    with pytest.raises(WeChatClientException) as err:
        call(*args, **kwargs)
    return err.value


# -- subscribe/send ------------------------------------------------------------------------------


def test_a_subscribe_send_spends_the_allowance_and_is_recorded(fake, wx):
    fake.grant(ALICE, COUPON)
    before = time.monotonic()
    answer = wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data(), page="pages/wallet/index")
    assert answer == {"errcode": 0, "errmsg": "ok"}
    assert fake.allowance(ALICE, COUPON) == 0
    (sent,) = fake.sent_to(ALICE)
    assert sent == Sent(
        kind="subscribe",
        openid=ALICE,
        template_id=COUPON,
        data={"thing1": "食堂满减券", "time2": "2026-11-23 10:00", "amount3": "¥5.00"}
        | {"phrase4": "即将过期"},
        page="pages/wallet/index",
        url=None,
        at=sent.at,
    )
    assert before <= sent.at <= time.monotonic()
    (request,) = fake.requests_to(SUBSCRIBE_SEND_PATH)
    assert request.method == "POST"
    assert request.query == {"access_token": fake.current_token}
    assert request.body == {
        "touser": ALICE,
        "template_id": COUPON,
        "page": "pages/wallet/index",
        "data": coupon_data(),
    }

    again = _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data())
    assert again.errcode == 43101
    assert again.errmsg.startswith("user refuse to accept the msg, rid: ")
    assert RID.search(again.errmsg)
    assert len(fake.sent) == 1


def test_allowances_add_up_per_user_and_template(fake, wx):
    fake.add_template("tpl_parcel", ["thing1"])
    fake.grant(ALICE, COUPON, count=2)
    fake.grant(ALICE, "tpl_parcel")
    fake.grant("o_bob", COUPON)
    for _ in range(2):
        wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())
    assert _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data()).errcode == 43101
    assert fake.allowance(ALICE, "tpl_parcel") == 1
    assert fake.allowance("o_bob", COUPON) == 1
    assert [s.template_id for s in fake.sent_to(ALICE)] == [COUPON, COUPON]


_VALID = {
    "thing1": "您的满减券明天到期",
    "phrase2": "已送达",
    "name3": "张三",
    "number4": "12.5",
    "amount5": "¥5.00",
    "character_string6": "HL-2026-0001",
    "time7": "2026-11-23 10:00",
    "date8": "2026年11月23日",
}


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("thing1", "一" * 20, None),
        ("thing1", "一" * 21, "exceeds the length limit"),
        ("thing1", "", "is empty"),
        ("phrase2", "即将过期", None),
        ("phrase2", "一二三四五六", "exceeds the length limit"),
        ("phrase2", "soon", "invalid"),
        ("name3", "张" * 10, None),
        ("name3", "张" * 11, "exceeds the length limit"),
        ("name3", "Alice Smith", None),
        ("number4", "9" * 32, None),
        ("number4", "9" * 33, "exceeds the length limit"),
        ("number4", "12a", "invalid"),
        ("amount5", "5.00元", None),
        ("amount5", "¥1234567890", None),
        ("amount5", "¥12345678901", "exceeds the length limit"),
        ("amount5", "five yuan", "invalid"),
        ("character_string6", "A" * 32, None),
        ("character_string6", "A" * 33, "exceeds the length limit"),
        ("character_string6", "订单123", "invalid"),
        ("time7", "2026年11月23日", None),
        ("time7", "2026-11-23 10:00~12:00", None),
        ("time7", "tomorrow", "invalid"),
        ("time7", "2026-02-30 10:00", "invalid"),
        ("date8", "2026-11-23", None),
        ("date8", "10:00", "invalid"),
    ],
)
def test_field_limits_are_wechats(fake, wx, key, value, problem):
    fake.add_template(ALL_TYPES, list(_VALID))
    fake.grant(ALICE, ALL_TYPES)
    data = {k: {"value": value if k == key else v} for k, v in _VALID.items()}
    if problem is None:
        assert wx.wxa.send_subscribe_message(ALICE, ALL_TYPES, data)["errcode"] == 0
        assert fake.sent_to(ALICE)[0].data[key] == value
        return
    err = _raises(wx.wxa.send_subscribe_message, ALICE, ALL_TYPES, data)
    assert err.errcode == 47003
    assert err.errmsg.startswith(f"argument invalid! data.{key}.value {problem}, rid: ")
    assert fake.allowance(ALICE, ALL_TYPES) == 1  # a refused send spends nothing
    assert fake.sent == []


def test_a_missing_data_key_is_47003(fake, wx):
    fake.grant(ALICE, COUPON)
    data = coupon_data()
    del data["time2"]
    err = _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, data)
    assert err.errcode == 47003
    assert "data.time2.value is empty" in err.errmsg


def test_an_unknown_template_is_40037(fake, wx):
    fake.grant(ALICE, "tpl_nobody_registered")
    err = _raises(wx.wxa.send_subscribe_message, ALICE, "tpl_nobody_registered", coupon_data())
    assert err.errcode == 40037
    assert err.errmsg.startswith("invalid template_id, rid: ")
    # An Official Account template is no subscribe template, and the other way round.
    assert _raises(wx.wxa.send_subscribe_message, ALICE, ORDER, coupon_data()).errcode == 40037
    fake.follow(ALICE)
    assert _raises(wx.message.send_template, ALICE, COUPON, coupon_data()).errcode == 40037


def test_a_page_the_mini_program_does_not_have_is_41030(fake, wx):
    fake.pages = {"pages/index/index", "pages/wallet/index"}
    fake.grant(ALICE, COUPON)
    err = _raises(
        wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data(), page="pages/gone/index"
    )
    assert err.errcode == 41030
    assert err.errmsg.startswith("invalid page, rid: ")
    wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data(), page="pages/wallet/index?id=7")
    assert fake.sent_to(ALICE)[0].page == "pages/wallet/index?id=7"


def test_an_openid_that_is_not_one_is_40003(fake, wx):
    fake.grant("bad_openid", COUPON)
    err = _raises(wx.wxa.send_subscribe_message, "bad_openid", COUPON, coupon_data())
    assert err.errcode == 40003
    assert err.errmsg.startswith("invalid openid, rid: ")


def test_miniprogram_state_and_lang_go_through_client_post(fake, wx):
    fake.grant(ALICE, COUPON, count=2)
    body = {"touser": ALICE, "template_id": COUPON, "data": coupon_data()}
    answer = wx.post("message/subscribe/send", data=body | {"miniprogram_state": "trial"})
    assert answer["errcode"] == 0
    (sent,) = fake.sent_to(ALICE)
    assert (sent.miniprogram_state, sent.lang) == ("trial", None)
    err = _raises(wx.post, "message/subscribe/send", data=body | {"miniprogram_state": "beta"})
    assert err.errcode == 47003
    assert fake.allowance(ALICE, COUPON) == 1


def test_bodies_wechat_cannot_read(fake, wx):
    fake.grant(ALICE, COUPON)
    err = _raises(wx.post, "message/subscribe/send", data=b"{not json")
    assert (err.errcode, err.errmsg.split(",")[0]) == (47001, "data format error")
    assert fake.requests_to(SUBSCRIBE_SEND_PATH)[-1].body is None
    assert _raises(wx.post, "message/subscribe/send", data=b"").errcode == 44002
    assert _raises(wx.get, "message/subscribe/send").errcode == 43002
    assert fake.allowance(ALICE, COUPON) == 1


# -- template/send -------------------------------------------------------------------------------


def test_template_messages_reach_followers_only(fake, wx):
    data = ORDER_DATA
    err = _raises(wx.message.send_template, ALICE, ORDER, data)
    assert err.errcode == 43004
    assert err.errmsg.startswith("require subscribe, rid: ")
    assert fake.sent == []

    fake.follow(ALICE)
    mini = {"appid": APPID, "pagepath": "pages/order/index?id=A1024"}
    answer = wx.message.send_template(
        ALICE, ORDER, data, url="https://example.com/o", mini_program=mini
    )
    assert answer["errcode"] == 0
    assert answer["errmsg"] == "ok"
    assert isinstance(answer["msgid"], int)
    (sent,) = fake.sent_to(ALICE)
    assert (sent.kind, sent.url, sent.miniprogram, sent.msgid) == (
        "template",
        "https://example.com/o",
        mini,
        answer["msgid"],
    )
    assert sent.data["keyword3"] == "请到一食堂二楼窗口取餐"
    (request,) = [r for r in fake.requests_to(TEMPLATE_SEND_PATH) if r.body.get("url")]
    assert request.body["miniprogram"] == mini

    second = wx.message.send_template(ALICE, ORDER, data)
    assert second["msgid"] != answer["msgid"]  # each message has its own id
    fake.unfollow(ALICE)
    assert _raises(wx.message.send_template, ALICE, ORDER, data).errcode == 43004


def test_template_fields_have_the_same_limits(fake, wx):
    fake.follow(ALICE)
    data = ORDER_DATA | {"thing1": {"value": "一" * 21}}
    err = _raises(wx.message.send_template, ALICE, ORDER, data)
    assert err.errcode == 47003
    assert "data.thing1.value" in err.errmsg


# -- scripted answers ----------------------------------------------------------------------------


def test_a_scripted_minute_limit_then_success(fake, wx):
    fake.grant(ALICE, COUPON)
    fake.script_send(ALICE, Script(errcode=45011), Script())
    err = _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data())
    assert err.errcode == 45011
    assert err.errmsg.startswith("api minute-quota reach limit")
    assert fake.allowance(ALICE, COUPON) == 1  # nothing was delivered, nothing spent
    assert wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())["errcode"] == 0
    assert fake.allowance(ALICE, COUPON) == 0
    assert len(fake.sent_to(ALICE)) == 1


def test_scripts_belong_to_their_openid(fake, wx):
    fake.grant("o_bob", COUPON)
    fake.script_send(ALICE, Script(errcode=-1))
    assert wx.wxa.send_subscribe_message("o_bob", COUPON, coupon_data())["errcode"] == 0
    # Alice's script is consumed by her next send, whichever endpoint it goes to; then her
    # sends are handled normally again (she follows no Official Account).
    assert _raises(wx.message.send_template, ALICE, ORDER, ORDER_DATA).errcode == -1
    assert _raises(wx.message.send_template, ALICE, ORDER, ORDER_DATA).errcode == 43004


@pytest.mark.parametrize(
    ("errcode", "exception", "wording"),
    [
        (45009, APILimitedException, "reach max api daily quota limit"),
        (43107, WeChatClientException, "subscribe ability banned"),
        (-1, WeChatClientException, "system error"),
        (40001, WeChatClientException, "invalid credential, access_token is invalid or not latest"),
    ],
)
def test_scripted_errcodes_surface_with_wechats_wording(fake, wx, errcode, exception, wording):
    fake.grant(ALICE, COUPON)
    fake.script_send(ALICE, Script(errcode=errcode))
    with pytest.raises(exception) as err:
        wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())
    assert err.value.errcode == errcode
    assert err.value.errmsg.startswith(f"{wording}, rid: ")
    assert RID.search(err.value.errmsg)
    assert fake.allowance(ALICE, COUPON) == 1


def test_scripted_transport_failures(fake, wx):
    fake.grant(ALICE, COUPON)
    fake.script_send(ALICE, Script(drop=True), Script(http_status=502))
    with pytest.raises(requests.ConnectionError):
        wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())
    assert _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data()).errcode is None
    assert wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())["errcode"] == 0


def test_a_scripted_token_error_is_cured_by_one_refresh(fake, wx):
    fake.grant(ALICE, COUPON)
    fake.script_send(ALICE, Script(errcode=40001))
    assert _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data()).errcode == 40001
    assert fake.token_fetches == 1  # auto_retry is off: the client did not refresh by itself
    wx.fetch_access_token()
    assert wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())["errcode"] == 0
    assert fake.token_fetches == 2


# -- access tokens -------------------------------------------------------------------------------


def test_an_unknown_access_token_is_40001(fake, wx):
    assert wx.auto_retry is False
    fake.grant(ALICE, COUPON)
    wx.session.set(wx.access_token_key, "not-a-token-wechat-issued", 7200)
    err = _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data())
    assert err.errcode == 40001
    assert err.errmsg.startswith("invalid credential, access_token is invalid or not latest")
    assert fake.token_fetches == 0


def test_an_expired_access_token_is_42001(fake, wx):
    fake.grant(ALICE, COUPON)
    token = wx.access_token
    fake.expire_token()
    assert not fake.token_valid(token)
    err = _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data())
    assert err.errcode == 42001
    assert err.errmsg.startswith("access_token expired, rid: ")
    assert fake.allowance(ALICE, COUPON) == 1


def test_a_replaced_token_works_for_the_grace_period_then_is_not_latest(fake, wx):
    fake.grant(ALICE, COUPON, count=2)
    old = wx.access_token

    def fetch_elsewhere() -> str:  # another process refreshing on its own
        params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        return requests.get(f"{fake.base_url}cgi-bin/token", params=params).json()["access_token"]

    assert fetch_elsewhere() != old
    assert wx.wxa.send_subscribe_message(ALICE, COUPON, coupon_data())["errcode"] == 0
    fake.token_grace_s = 0
    fetch_elsewhere()
    assert wx.access_token == old  # still cached by this worker
    err = _raises(wx.wxa.send_subscribe_message, ALICE, COUPON, coupon_data())
    assert err.errcode == 40001
    assert "not latest" in err.errmsg


def test_a_missing_access_token_is_41001(fake, wx):
    fake.grant(ALICE, COUPON)
    body = {"touser": ALICE, "template_id": COUPON, "data": coupon_data()}
    # requests drops a None parameter, so no access_token reaches WeChat.
    err = _raises(wx.post, "message/subscribe/send", data=body, params={"access_token": None})
    assert err.errcode == 41001
    assert err.errmsg.startswith("access_token missing, rid: ")
    assert "access_token" not in fake.requests_to(SUBSCRIBE_SEND_PATH)[0].query


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_sends_never_overspend_an_allowance(fake, wx):
    fake.grant(ALICE, COUPON, count=5)
    url = f"{fake.base_url}cgi-bin/message/subscribe/send"
    params = {"access_token": wx.access_token}
    body = {"touser": ALICE, "template_id": COUPON, "data": coupon_data()}
    # One kept-alive connection per sender, opened beforehand (a burst of connects would
    # overflow the listen backlog and wait out TCP's one-second SYN retry).
    sessions = [requests.Session() for _ in range(12)]
    for session in sessions:
        session.get(fake.base_url, timeout=5)
    errcodes: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(sessions))

    def send(session: requests.Session) -> None:
        start.wait()
        errcode = session.post(url, params=params, json=body, timeout=5).json()["errcode"]
        with lock:
            errcodes.append(errcode)

    threads = [threading.Thread(target=send, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    for session in sessions:
        session.close()
    assert sorted(errcodes) == [0] * 5 + [43101] * 7
    assert fake.allowance(ALICE, COUPON) == 0
    assert len(fake.sent_to(ALICE)) == 5
