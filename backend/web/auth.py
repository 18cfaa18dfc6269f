"""Who is calling: mini-program users by bearer token, merchants by admin API key."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import wraps

from flask import current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

from backend.errors import ApiError
from backend.services import users
from backend.services.keys import tenant_for_key

TOKEN_SALT = "huiliu.mp-token.v1"


@dataclass(frozen=True)
class IssuedToken:
    """What login gives the mini-program: the bearer token and how long it lasts."""

    token: str
    expires_in: int


def _serializer() -> URLSafeSerializer:
    """Tokens are signed with the app's secret: any worker can check one, none is stored."""
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def _key_digest(token_key: str) -> str:
    """What a token carries of the user's token key: an HMAC, so the token (signed but not
    encrypted) does not reveal the key itself."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, f"{TOKEN_SALT}:{token_key}".encode(), hashlib.sha256).hexdigest()[:32]


def issue_token(user) -> IssuedToken:
    """A signed token naming tenant, user and the user's token key, expiring by the app's
    clock (not the wall's). The key binds it to this row: a later row that somehow got the
    same id, or a re-created account, has another key and refuses it."""
    ttl = int(current_app.config["TOKEN_TTL_S"])
    now_s = int(current_app.config["CLOCK"].now().timestamp())
    payload = {"t": user.tenant_id, "u": user.id, "k": _key_digest(user.token_key)}
    token = _serializer().dumps({**payload, "exp": now_s + ttl})
    return IssuedToken(token=token, expires_in=ttl)


def _user_from_token(raw: str):
    """The user row a bearer token names, or a 401 saying why it names no one."""
    try:
        payload = _serializer().loads(raw)
    except BadSignature:
        raise ApiError(401, "invalid_token", "token signature is invalid") from None
    if not isinstance(payload, dict) or not {"t", "u", "exp"} <= payload.keys():
        raise ApiError(401, "invalid_token", "token payload is malformed")
    if not isinstance(payload.get("k"), str):
        # Issued before tokens named the user's key: it cannot prove whose it is.
        raise ApiError(401, "invalid_token", "token is from an older version; log in again")
    if payload["exp"] <= current_app.config["CLOCK"].now().timestamp():
        raise ApiError(401, "token_expired", "token has expired; log in again")
    user = users.by_id(payload["t"], payload["u"])
    # Same answer whether the row is gone or holds another key (erased, or an id reused).
    if user is None or not hmac.compare_digest(_key_digest(user.token_key), payload["k"]):
        raise ApiError(401, "invalid_token", "the token's user no longer exists; log in again")
    return user


def require_user(view):
    """Bearer-token guard for /mp/v1 routes; sets g.user and g.tenant_id."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise ApiError(401, "missing_token", "send 'Authorization: Bearer <token>'")
        g.user = _user_from_token(raw.strip())
        g.tenant_id = g.user.tenant_id
        return view(*args, **kwargs)

    return wrapped


def require_api_key(view):
    """X-Api-Key guard for /admin/v1 routes; sets g.tenant_id. Every query filters by it."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        raw = request.headers.get("X-Api-Key", "")
        if not raw:
            raise ApiError(401, "missing_api_key", "send the tenant's admin key in X-Api-Key")
        tenant = tenant_for_key(raw)
        if tenant is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid")
        g.tenant = tenant
        g.tenant_id = tenant.id
        return view(*args, **kwargs)

    return wrapped
