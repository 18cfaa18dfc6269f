"""Named lock rows in the database: one holder across every process sharing it.

Used where two processes must not do the same thing at once: two campaign runs for a tenant,
two workers refreshing one WeChat access token (each fetch invalidates the previous token).
A long holder keeps a short lock alive with renew_lock, so a crashed holder's lock lapses in
minutes while a live one never loses it.
"""

from __future__ import annotations

import peewee as pw

from backend.store.db import write_transaction
from backend.store.models import JobLock

DEFAULT_TTL_MS = 30 * 60 * 1000  # a crashed holder's lock is taken over after this


class LockLost(RuntimeError):
    """The holder's lock lapsed and was taken (or released) by someone else."""


def acquire_lock(name: str, holder: str, now_ms: int, ttl_ms: int = DEFAULT_TTL_MS) -> bool:
    """Take the named lock row, or a stale one; False if someone else holds it."""
    try:
        with write_transaction():
            row = JobLock.get_or_none(JobLock.name == name)
            if row is None:
                JobLock.create(name=name, holder=holder, expires_ms=now_ms + ttl_ms)
                return True
            if row.expires_ms > now_ms:
                return False
            taken = (
                JobLock.update(holder=holder, expires_ms=now_ms + ttl_ms)
                .where((JobLock.name == name) & (JobLock.expires_ms == row.expires_ms))
                .execute()
            )
            return taken == 1
    except pw.IntegrityError:
        return False


def release_lock(name: str, holder: str) -> None:
    """Give the named lock up, if `holder` still has it (a lock taken over is not ours)."""
    with write_transaction():
        JobLock.delete().where((JobLock.name == name) & (JobLock.holder == holder)).execute()


def renew_lock(name: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
    """Extend the holder's lock to now + ttl; False if the lock is no longer theirs.

    Conditioned on the holder only: a lapsed lock nobody has taken is still safely ours (a
    takeover changes the holder in one conditional UPDATE, so exactly one of the two wins).
    """
    with write_transaction():
        got = (
            JobLock.update(expires_ms=now_ms + ttl_ms)
            .where((JobLock.name == name) & (JobLock.holder == holder))
            .execute()
        )
    return got == 1


def delete_expired(prefix: str, before_ms: int) -> int:
    """Delete the lock rows named `prefix…` whose lease ended before `before_ms` (leases
    that are free to take anyway); returns how many."""
    with write_transaction():
        return (
            JobLock.delete()
            .where(JobLock.name.startswith(prefix) & (JobLock.expires_ms < before_ms))
            .execute()
        )
