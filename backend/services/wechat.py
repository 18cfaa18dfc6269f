"""The real wechatpy client, pointed at WECHAT_API_BASE, and login through it.

WeChat's answers become API errors a mini-program can act on. The session_key WeChat returns
is dropped here: it is never stored, returned or logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from backend.clock import SystemClock
from backend.config import DEFAULT_API_BASE
from backend.errors import ApiError
from backend.store.models import KeyValue

log = logging.getLogger(__name__)


class RebaseAdapter(HTTPAdapter):
    """Sends WeChat-bound requests to another base URL (a local fake in tests)."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base.rstrip("/") + "/"

    def send(self, request, **kwargs):
        request.url = self.base + request.url[len(DEFAULT_API_BASE) :]
        return super().send(request, **kwargs)


class DatabaseStorage(SessionStorage):
    """wechatpy's token cache in the database, so all workers share one access token."""

    def __init__(self, clock: SystemClock) -> None:
        self.clock = clock

    def get(self, key, default=None):
        row = KeyValue.get_or_none(KeyValue.key == key)
        if row is None or (row.expires_ms is not None and row.expires_ms <= self.clock.now_ms()):
            return default
        return row.value

    def set(self, key, value, ttl=None):
        expires = self.clock.now_ms() + int(ttl) * 1000 if ttl else None
        KeyValue.insert(key=key, value=value, expires_ms=expires).on_conflict(
            conflict_target=[KeyValue.key], preserve=[KeyValue.value, KeyValue.expires_ms]
        ).execute()

    def delete(self, key):
        KeyValue.delete().where(KeyValue.key == key).execute()


def make_client(appid: str, secret: str, api_base: str, clock: SystemClock) -> WeChatClient:
    client = WeChatClient(
        appid, secret, session=DatabaseStorage(clock), timeout=5, auto_retry=False
    )
    if api_base.rstrip("/") + "/" != DEFAULT_API_BASE:
        client._http.mount(DEFAULT_API_BASE, RebaseAdapter(api_base))
    return client


@dataclass(frozen=True)
class WechatIdentity:
    openid: str
    unionid: str | None


# errcode -> (HTTP status, our code, message). From WeChat's code2Session documentation.
LOGIN_ERRORS = {
    40029: (400, "invalid_code", "the login code is invalid; call wx.login again"),
    40163: (400, "code_used", "the login code was already used; call wx.login again"),
    45011: (429, "wechat_rate_limited", "too many logins for this user; retry in a minute"),
    40226: (403, "user_blocked", "WeChat has blocked this user (high-risk account)"),
    -1: (503, "wechat_busy", "WeChat is busy; retry shortly"),
}


def code_to_session(client: WeChatClient, code: str) -> WechatIdentity:
    try:
        answer = client.wxa.code_to_session(code)
    except WeChatClientException as exc:
        if exc.errcode in LOGIN_ERRORS:
            status, name, message = LOGIN_ERRORS[exc.errcode]
            raise ApiError(status, name, message, wechat_errcode=exc.errcode) from None
        log.error("WeChat login failed: errcode=%s errmsg=%s", exc.errcode, exc.errmsg)
        if exc.errcode is None:
            raise ApiError(502, "wechat_error", "WeChat answered with an HTTP error") from None
        raise ApiError(
            502,
            "wechat_error",
            f"WeChat refused the login (errcode {exc.errcode})",
            wechat_errcode=exc.errcode,
        ) from None
    except requests.RequestException as exc:
        log.error("WeChat unreachable: %s", type(exc).__name__)
        raise ApiError(503, "wechat_unreachable", "could not reach WeChat; retry shortly") from None
    if not isinstance(answer, dict) or not answer.get("openid"):
        raise ApiError(502, "wechat_error", "WeChat's answer carried no openid")
    # session_key is deliberately not read further: nothing here needs it.
    return WechatIdentity(openid=answer["openid"], unionid=answer.get("unionid") or None)
