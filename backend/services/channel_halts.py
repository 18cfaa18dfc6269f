"""Halted channels: when WeChat says a tenant's channel must stop (a daily quota used up, an
account restricted), delivery stops sending on it until the time given, instead of failing
every queued touch one by one. Kept as an expiring row in the key-value table."""

from __future__ import annotations

from backend.store.db import write_transaction
from backend.store.models import KeyValue


def _halt_key(tenant_id: int, channel: str) -> str:
    return f"channel_halt:{tenant_id}:{channel}"


def halted_until(tenant_id: int, channel: str, now_ms: int) -> int | None:
    """Until when WeChat told us to stop sending on the tenant's channel (a quota or a ban),
    or None: a halted channel's touches wait instead of failing one by one."""
    row = KeyValue.get_or_none(KeyValue.key == _halt_key(tenant_id, channel))
    if row is None or row.expires_ms is None or row.expires_ms <= now_ms:
        return None
    return int(row.expires_ms)


def halt(tenant_id: int, channel: str, until_ms: int, reason: str) -> None:
    """Stop sending on the tenant's channel until `until_ms` (WeChat's answer says why)."""
    with write_transaction():
        KeyValue.insert(
            key=_halt_key(tenant_id, channel), value=reason, expires_ms=until_ms
        ).on_conflict(
            conflict_target=[KeyValue.key], preserve=[KeyValue.value, KeyValue.expires_ms]
        ).execute()
