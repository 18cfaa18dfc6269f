"""The four recall channels behind one small interface, and WeChat's errors mapped to actions.

A channel's `send` returns an Outcome; it never raises for a delivery problem. What to do
about each WeChat errcode follows the table in shared/domain/WECHAT_RULES.md: a token error is
refreshed and retried once, 45011 backs off, 45009 stops that API until tomorrow, 43107 stops
the channel and alerts, 43101 means the allowance is gone, data and id errors are defects that
are never retried, and a busy WeChat or a network failure is retried with backoff.

In WECHAT_MODE=dev there is no WeChat: the subscribe and OA channels log the rendered message
and report success, so the whole job can be tried on a laptop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import requests
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from backend.core.calendar import MS_PER_DAY, china_day, day_start_ms
from backend.services.messages import Rendered
from backend.services.wechat import SharedTokenClient
from backend.store.models import SmsMessage, Touch

log = logging.getLogger(__name__)

TOKEN_ERRORS = {40001, 40014, 42001}
DEFECTS = {
    47003: "bad_template_data",
    40003: "bad_openid",
    40037: "bad_template",
    41030: "bad_page",
}
TRANSIENT = {-1}


@dataclass(frozen=True)
class Outcome:
    """What became of one send attempt.

    kind: sent | retry (transient; try again later) | failed (final) | halt (stop this channel
    until `until_ms`, the touch stays queued).
    """

    kind: str
    reason: str = ""
    errcode: int | None = None
    provider_id: str | None = None
    until_ms: int | None = None  # halt: when the channel may send again
    allowance_gone: bool = False  # 43101: the user's allowance for the template is 0


@dataclass(frozen=True)
class Recipient:
    """Where one user can be reached: the mini-program openid, the Official Account openid
    (None unless they follow it) and a phone number (None unless they gave one)."""

    openid: str
    oa_openid: str | None
    phone: str | None


class Channel(Protocol):
    """What delivery needs of a channel: its `name` (the touch's channel) and `send`."""

    name: str

    def send(
        self, touch: Touch, to: Recipient, message: Rendered, template_id: str | None, now_ms: int
    ) -> Outcome:
        """Try to deliver `message` for `touch` to `to` at `now_ms` (UTC epoch ms); never
        raises for a delivery problem, the Outcome says what happened and what to do."""
        ...


def _tomorrow_ms(now_ms: int) -> int:
    return day_start_ms(int(china_day(now_ms)) + 1)


def wechat_call(client: SharedTokenClient, call, now_ms: int) -> Outcome:
    """Run one WeChat API call with the error table applied (client has auto_retry=False)."""
    for attempt in range(2):
        used = client.session.get(client.access_token_key)
        try:
            answer = call()
        except WeChatClientException as exc:
            code = exc.errcode
            if code in TOKEN_ERRORS and attempt == 0:
                log.warning("WeChat access token rejected (errcode %s); refreshing once", code)
                try:
                    # Unless another process already replaced the rejected token.
                    client.fetch_access_token(replacing=used)
                except (WeChatClientException, requests.RequestException) as fetch_exc:
                    return Outcome(
                        "retry", "token_refresh_failed", getattr(fetch_exc, "errcode", None)
                    )
                continue
            return _classify(code, now_ms)
        except requests.RequestException as exc:
            log.warning("WeChat unreachable: %s", type(exc).__name__)
            return Outcome("retry", "network")
        msgid = answer.get("msgid") if isinstance(answer, dict) else None
        return Outcome("sent", provider_id=str(msgid) if msgid is not None else None)
    return Outcome("failed", "token_rejected", 40001)


def _classify(code: int | None, now_ms: int) -> Outcome:
    if code is None:  # an HTTP error page, not a WeChat answer
        return Outcome("retry", "http_error")
    if code in TOKEN_ERRORS:
        return Outcome("failed", "token_rejected", code)
    if code == 43101:
        return Outcome("failed", "no_allowance", code, allowance_gone=True)
    if code == 43004:
        return Outcome("failed", "not_follower", code)
    if code in DEFECTS:
        log.error("WeChat refused a message as defective: errcode %s (%s)", code, DEFECTS[code])
        return Outcome("failed", DEFECTS[code], code)
    if code == 45011:
        return Outcome("retry", "rate_limited", code)
    if code == 45009:
        log.error("WeChat daily API quota reached (45009); stopping this channel until tomorrow")
        return Outcome("halt", "daily_quota", code, until_ms=_tomorrow_ms(now_ms))
    if code == 43107:
        log.error("WeChat reports the sending ability banned (43107); stopping this channel")
        return Outcome("halt", "sending_banned", code, until_ms=now_ms + MS_PER_DAY)
    if code in TRANSIENT:
        return Outcome("retry", "wechat_busy", code)
    log.error("WeChat refused a message: errcode %s", code)
    return Outcome("failed", "wechat_error", code)


def _data(fields: dict[str, str]) -> dict:
    return {k: {"value": v} for k, v in fields.items()}


class SubscribeChannel:
    """Mini-program subscribe messages: spends one of the user's allowances per send. Without
    a client (WECHAT_MODE=dev) the message is logged and counted sent."""

    name = "subscribe"

    def __init__(self, client: WeChatClient | None) -> None:
        self.client = client

    def send(self, touch, to, message, template_id, now_ms) -> Outcome:
        """Send through WeChat's subscribe/send with the error table applied (`wechat_call`)."""
        if self.client is None:
            log.debug("dev subscribe message to %s: %s %s", to.openid, template_id, message.fields)
            return Outcome("sent", provider_id=f"dev-{touch.id}")
        client = self.client
        return wechat_call(
            client,
            lambda: client.wxa.send_subscribe_message(
                to.openid, template_id, _data(message.fields), page=message.page
            ),
            now_ms,
        )


class OaTemplateChannel:
    """Official Account template messages, for users who follow the account; the card opens
    the mini-program. In dev mode without a client the message is logged and counted sent."""

    name = "oa_template"

    def __init__(self, client: WeChatClient | None, mini_appid: str, dev: bool) -> None:
        self.client = client
        self.mini_appid = mini_appid
        self.dev = dev

    def send(self, touch, to, message, template_id, now_ms) -> Outcome:
        """Send through template/send; a user who does not follow the account fails at once."""
        if not to.oa_openid:
            return Outcome("failed", "not_follower")
        if self.client is None:
            if self.dev:
                log.debug("dev OA template to %s: %s %s", to.oa_openid, template_id, message.fields)
                return Outcome("sent", provider_id=f"dev-{touch.id}")
            return Outcome("failed", "oa_not_configured")
        client = self.client
        mini = {"appid": self.mini_appid, "pagepath": message.page} if message.page else None
        return wechat_call(
            client,
            lambda: client.message.send_template(
                to.oa_openid, template_id, _data(message.fields), mini_program=mini
            ),
            now_ms,
        )


class SmsProvider(Protocol):
    """An SMS vendor: whatever can take one text to one phone and give back its reference."""

    def send(self, tenant_id: int, touch_id: int, phone: str, text: str, now_ms: int) -> str:
        """Hand over one text; returns the vendor's reference for it."""
        ...


class OutboxSmsProvider:
    """Development SMS: each message becomes a row of sms_message, what a vendor would send."""

    def send(self, tenant_id, touch_id, phone, text, now_ms) -> str:
        """Write the row (once per touch: a retried send does not write a second)."""
        row, _ = SmsMessage.get_or_create(
            touch=touch_id,
            defaults={"tenant": tenant_id, "phone": phone, "text": text, "created_ms": now_ms},
        )
        return f"sms-{row.id}"


class SmsChannel:
    """Text messages through an SmsProvider, for users who gave a phone number."""

    name = "sms"

    def __init__(self, provider: SmsProvider) -> None:
        self.provider = provider

    def send(self, touch, to, message, template_id, now_ms) -> Outcome:
        """Send the rendered text; a user without a phone number fails at once."""
        if not to.phone:
            return Outcome("failed", "no_phone")
        ref = self.provider.send(touch.tenant_id, touch.id, to.phone, message.text or "", now_ms)
        return Outcome("sent", provider_id=ref)


class InAppChannel:
    """The welcome-back card: 'sent' means waiting for the user in GET /mp/v1/reengagement."""

    name = "in_app"

    def send(self, touch, to, message, template_id, now_ms) -> Outcome:
        """Always sent: the card needs no outside party (in-app is always reachable)."""
        return Outcome("sent", provider_id=f"card-{touch.id}")


def channels_for(app) -> dict[str, Channel]:
    """The channels as configured: real wechatpy clients in live mode."""
    cfg = app.config
    live = cfg["WECHAT_MODE"] == "live"
    mini = app.extensions["wechat_client"]() if live else None
    oa = app.extensions["oa_client"]()
    return {
        "subscribe": SubscribeChannel(mini),
        "oa_template": OaTemplateChannel(oa, cfg["WECHAT_APPID"], dev=not live),
        "sms": SmsChannel(OutboxSmsProvider()),
        "in_app": InAppChannel(),
    }
