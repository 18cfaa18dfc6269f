"""Merchants' admin API keys: made, stored as a prefix and a hash, and checked.

Services (tenant creation, the demo seeding) make keys and the web layer checks them, so
this lives below both, free of Flask."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from backend.store.models import ApiKey, Tenant

KEY_PREFIX = "hl"


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret part (hex SHA-256): a leaked table gives no keys."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key(tenant: Tenant, now_ms: int, label: str = "") -> str:
    """Create a key and return it in full; only its prefix and hash are stored."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    ApiKey.create(
        tenant=tenant, prefix=prefix, key_hash=hash_secret(secret), label=label, created_ms=now_ms
    )
    return f"{KEY_PREFIX}_{prefix}_{secret}"


def tenant_for_key(raw: str) -> Tenant | None:
    """The tenant a full `hl_<prefix>_<secret>` key belongs to, or None for a malformed,
    unknown or revoked key (in time that does not tell which)."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    key = ApiKey.get_or_none((ApiKey.prefix == parts[1]) & ApiKey.revoked_ms.is_null())
    # Compare even when the prefix is unknown so timing does not reveal which prefixes exist.
    expected = key.key_hash if key else hash_secret("")
    if not hmac.compare_digest(expected, hash_secret(parts[2])) or key is None:
        return None
    return key.tenant
