"""The real wechatpy client, pointed at WECHAT_API_BASE, and login through it.

WeChat's answers become API errors a mini-program can act on. The session_key WeChat returns
is dropped here: it is never stored, returned or logged.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from backend.core.clock import SystemClock
from backend.errors import ApiError
from backend.services.locks import acquire_lock, release_lock
from backend.store.models import KeyValue

log = logging.getLogger(__name__)


DEFAULT_API_BASE = "https://api.weixin.qq.com/"  # WeChat's own; tests point elsewhere


class WeChatAdapter(HTTPAdapter):
    """Every WeChat-bound request gets a timeout, and goes to WECHAT_API_BASE if set.

    wechatpy sends its access-token fetch without a timeout; a WeChat that never answers must
    not hold a worker forever. Proxies are chosen again for the rewritten URL so NO_PROXY for a
    local fake is honoured.
    """

    def __init__(self, base: str, timeout: float) -> None:
        super().__init__()
        self.base = base.rstrip("/") + "/"
        self.timeout = timeout

    def send(self, request, timeout=None, proxies=None, **kwargs):
        """requests' send, with the base rewritten and our timeout when none was given."""
        if self.base != DEFAULT_API_BASE:
            request.url = self.base + request.url[len(DEFAULT_API_BASE) :]
            proxies = requests.utils.get_environ_proxies(request.url)
        return super().send(request, timeout=timeout or self.timeout, proxies=proxies, **kwargs)


class DatabaseStorage(SessionStorage):
    """wechatpy's token cache in the database, so all workers share one access token."""

    def __init__(self, clock: SystemClock) -> None:
        self.clock = clock

    def get(self, key, default=None):
        """The stored value, or `default` when absent or past its expiry by the app's clock."""
        row = KeyValue.get_or_none(KeyValue.key == key)
        if row is None or (row.expires_ms is not None and row.expires_ms <= self.clock.now_ms()):
            return default
        return row.value

    def set(self, key, value, ttl=None):
        """Store (or replace) a value for `ttl` seconds less five minutes (see below)."""
        # Expire five minutes early: WeChat keeps the old token valid for five minutes after a
        # refresh, so workers refreshing near the deadline never hold a dead token.
        expires = self.clock.now_ms() + max(int(ttl) - 300, 60) * 1000 if ttl else None
        KeyValue.insert(key=key, value=value, expires_ms=expires).on_conflict(
            conflict_target=[KeyValue.key], preserve=[KeyValue.value, KeyValue.expires_ms]
        ).execute()

    def delete(self, key):
        """Forget a value (wechatpy drops a token WeChat refused)."""
        KeyValue.delete().where(KeyValue.key == key).execute()


_ALWAYS = object()  # fetch_access_token() without an argument fetches, as in wechatpy


class SharedTokenClient(WeChatClient):
    """wechatpy's client, with access-token refreshes serialised across processes.

    Every fetch of cgi-bin/token invalidates the previous token (after a 5-minute grace), so
    workers refreshing on their own knock each other's tokens out. A refresh here takes a
    lock row first, and skips the fetch when another process stored a different token
    meanwhile.
    """

    LOCK_TTL_MS = 30_000
    WAIT_S = 10.0  # how long to wait for another process's refresh
    POLL_S = 0.05

    def __init__(self, *args, clock: SystemClock, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    @property
    def access_token(self):
        """The stored token (DatabaseStorage drops it 5 minutes before WeChat would), or a
        new one — fetched by one process only, the others waiting for it."""
        token = self.session.get(self.access_token_key)
        if token:
            return token
        self.fetch_access_token(replacing=None)
        return self.session.get(self.access_token_key)

    def fetch_access_token(self, replacing: str | None | object = _ALWAYS):
        """Fetch a token under the lock. Given the token a call was refused with
        (`replacing`), skip the fetch when another process has stored a different one."""
        name = f"wechat_token:{self.appid}"
        holder = uuid.uuid4().hex
        waits = 0
        while not acquire_lock(name, holder, self.clock.now_ms(), self.LOCK_TTL_MS):
            waits += 1
            if waits * self.POLL_S > self.WAIT_S:
                raise WeChatClientException(-1, "timed out waiting for another token refresh")
            time.sleep(self.POLL_S)
        try:
            stored = self.session.get(self.access_token_key)
            if replacing is not _ALWAYS and stored and stored != replacing:
                return {"access_token": stored}
            return super().fetch_access_token()
        finally:
            release_lock(name, holder)


def make_client(
    appid: str, secret: str, api_base: str, clock: SystemClock, timeout: float = 5
) -> WeChatClient:
    """A wechatpy client for one app: its token shared through the database, refreshes
    serialised, wechatpy's own retry off (channels.wechat_call applies our error table), and
    every request bounded by `timeout` seconds and sent to `api_base` (a fake in tests)."""
    client = SharedTokenClient(
        appid,
        secret,
        session=DatabaseStorage(clock),
        timeout=timeout,
        auto_retry=False,
        clock=clock,
    )
    client._http.mount(DEFAULT_API_BASE, WeChatAdapter(api_base, timeout))
    return client


@dataclass(frozen=True)
class WechatIdentity:
    """Who a login code belongs to: the mini-program openid, and the unionid when WeChat gives
    one (an app bound to an Open Platform account)."""

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
    """WeChat's code2Session through the client, without an access token.

    wechatpy's `client.wxa.code_to_session` sends the same request but first fetches an
    access token that code2Session does not need, so a token-endpoint failure (IP whitelist,
    daily quota) would block every login. Passing access_token=None skips that fetch (requests
    drops None parameters); the rest — signing, parsing, errcode handling — is wechatpy's own.
    """
    try:
        answer = client.get(
            "sns/jscode2session",
            api_base_url=DEFAULT_API_BASE,  # the client's default base is .../cgi-bin/
            params={
                "appid": client.appid,
                "secret": client.secret,
                "js_code": code,
                "grant_type": "authorization_code",
                "access_token": None,
            },
        )
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
