"""How the fake answers: WeChat's errcodes in WeChat's words, and scripted answers.

A test scripts a failure (a login code, a token fetch, the next send to an openid) with a
`Script`; login codes starting with one of PREFIX_SCRIPTS' prefixes answer as scripted
without any setup. Errors carry WeChat's request-id suffix (`error_body`), so a client that
parses errmsg meets what it will meet live.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

# errcode -> errmsg, as WeChat words them (before the rid suffix).
ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    40226: "code blocked",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41030: "invalid page",
    42001: "access_token expired",
    43002: "require POST method",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    43107: "subscribe ability banned",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
}


@dataclass(frozen=True)
class Script:
    """How the fake answers one request. The first field set decides; all unset means success."""

    drop: bool = False  # close the connection without answering
    hang: bool = False  # hold the connection for hang_s seconds, then close it unanswered
    http_status: int | None = None  # answer this HTTP status with an HTML error page
    errcode: int | None = None  # answer HTTP 200 with this errcode
    errmsg: str | None = None  # default: WeChat's wording for errcode
    openid: str | None = None  # on success; default o_<code>
    unionid: str | None = None  # on success; default none (u_<name> for union_<name>)


PREFIX_SCRIPTS = {
    "bad_": Script(errcode=40029),
    "busy_": Script(errcode=-1),
    "limit_": Script(errcode=45011),
    "blocked_": Script(errcode=40226),
    "http500_": Script(http_status=500),
    "drop_": Script(drop=True),
    "hang_": Script(hang=True),
}


def _rid() -> str:
    """A request id in WeChat's shape (`6a1b2c3d-4e5f6a7b-8c9d0e1f`)."""
    return "-".join(secrets.token_hex(4) for _ in range(3))


def error_body(errcode: int, errmsg: str | None = None) -> dict:
    """The JSON body of an API error: errmsg in WeChat's words (or `errmsg`) plus a rid."""
    text = errmsg if errmsg is not None else ERRMSG.get(errcode, "unknown error")
    return {"errcode": errcode, "errmsg": f"{text}, rid: {_rid()}"}
