"""The server side of a dashboard sign-in: one `KeyValue` row per session, and the checks
that end a session when the key or password it was made with is withdrawn.

The cookie (backend/web/dashboard/session.py) only names a row here: signing out deletes
it, so a copy of the cookie taken before opens nothing after.
"""

from __future__ import annotations

import hashlib

from backend.services import ratelimit
from backend.store.db import write_transaction
from backend.store.models import ApiKey, KeyValue, Tenant

PREFIX = "dash-session:"  # + sha256 of the session id: the server-side session row


def _row_key(sid: str) -> str:
    """The row's key holds a hash of the id: reading the table does not give a usable id."""
    return PREFIX + hashlib.sha256(sid.encode()).hexdigest()


def start(sid: str, tenant_id: int, now_ms: int, ttl_ms: int) -> None:
    """Store a new session for the tenant, expiring with its cookie; clear ended ones so
    they do not pile up."""
    with write_transaction():
        KeyValue.create(key=_row_key(sid), value=str(tenant_id), expires_ms=now_ms + ttl_ms)
    ratelimit.forget_expired(PREFIX, now_ms)


def alive(sid: str, tenant_id: object, now_ms: int) -> bool:
    """The server still holds this session, for this tenant, and it has not expired."""
    row = KeyValue.get_or_none(KeyValue.key == _row_key(sid))
    return row is not None and (row.expires_ms or 0) > now_ms and row.value == str(tenant_id)


def end(sid: str) -> None:
    """Delete the session's row: every copy of its cookie is signed out."""
    with write_transaction():
        KeyValue.delete().where(KeyValue.key == _row_key(sid)).execute()


def tenant(tenant_id: object) -> Tenant | None:
    """The tenant a session names, if it still exists."""
    return Tenant.get_or_none(Tenant.id == tenant_id)


def key_in_force(prefix: str, tenant_id: int) -> bool:
    """The API key a session was signed in with is unrevoked and still this tenant's."""
    key = ApiKey.get_or_none((ApiKey.prefix == prefix) & ApiKey.revoked_ms.is_null())
    return key is not None and key.tenant_id == tenant_id
