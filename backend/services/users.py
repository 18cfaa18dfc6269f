"""Finding and creating the users of one tenant."""

from __future__ import annotations

from backend.errors import ApiError
from backend.store.models import User


def get_or_create(tenant_id: int, openid: str, unionid: str | None, now_ms: int) -> User:
    """The user for an openid, created on first login; safe when two logins race."""
    User.insert(
        tenant=tenant_id, openid=openid, unionid=unionid, created_ms=now_ms
    ).on_conflict_ignore().as_rowcount().execute()
    user = User.get((User.tenant == tenant_id) & (User.openid == openid))
    if unionid and user.unionid != unionid:
        User.update(unionid=unionid).where(User.id == user.id).execute()
        user.unionid = unionid
    return user


def by_openid(tenant_id: int, openid: str) -> User:
    user = None
    if "\x00" not in openid:  # PostgreSQL cannot even compare such a string
        user = User.get_or_none((User.tenant == tenant_id) & (User.openid == openid))
    if user is None:
        raise ApiError(404, "user_not_found", f"no user with openid {openid!r}")
    return user
