"""Fixed-window attempt counters in the database, so every worker and process agrees.

One limiter for everything that must be rate limited (dashboard sign-in, mini-program login).
An attempt is *reserved* before the costly or guessable step it guards (a password check, a
WeChat code exchange) by one atomic upsert that adds one and returns the new count: N parallel
requests get counts 1..N, so exactly `limit` of them go ahead, whatever the timing. Reading
the count first and adding to it after the slow step (the old way) let 64 parallel wrong
passwords through 23 checks against a limit of 10. A caller that does not want an attempt to
count (a sign-in that succeeded, a code WeChat accepted) gives its reservation back with
`refund`.

A window opens with its first attempt and lasts `window_ms`; the count lives in a `KeyValue`
row whose `expires_ms` is the window's end. Counts are integers stored as text (the table's
value column), incremented in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.errors import ApiError
from backend.store.db import database, write_transaction
from backend.store.models import KeyValue

_TABLE = KeyValue._meta.table_name


@dataclass(frozen=True)
class Reservation:
    """One counted attempt: its place in the window and whether it is within the limit."""

    key: str
    count: int  # this attempt's number in the window (1 = the first)
    limit: int
    expires_ms: int  # the window's end

    @property
    def allowed(self) -> bool:
        """Whether this attempt is within the limit (the counting goes on past it)."""
        return self.count <= self.limit

    def retry_after_s(self, now_ms: int) -> int:
        """Whole seconds until the window ends (for a Retry-After header; at least 1)."""
        return max(1, -(-(self.expires_ms - now_ms) // 1000))


def _sql(text: str) -> str:
    return text.replace("?", database.param)


def reserve(key: str, limit: int, window_ms: int, now_ms: int) -> Reservation:
    """Count one attempt against `key` atomically; `.allowed` says whether it may go ahead.

    A window that has ended starts again at 1. Attempts beyond the limit are counted too (the
    window does not move), so they never squeeze in after a refund of an earlier one.
    """
    sql = _sql(
        f"INSERT INTO {_TABLE} (\"key\", value, expires_ms) VALUES (?, '1', ?) "
        'ON CONFLICT ("key") DO UPDATE SET '
        f"value = CASE WHEN {_TABLE}.expires_ms IS NULL OR {_TABLE}.expires_ms <= ? THEN '1' "
        f"ELSE CAST(CAST({_TABLE}.value AS INTEGER) + 1 AS TEXT) END, "
        f"expires_ms = CASE WHEN {_TABLE}.expires_ms IS NULL OR {_TABLE}.expires_ms <= ? "
        f"THEN ? ELSE {_TABLE}.expires_ms END "
        "RETURNING value, expires_ms"
    )
    end = now_ms + window_ms
    with write_transaction():
        cursor = database.execute_sql(sql, (key, end, now_ms, now_ms, end))
        ((value, expires_ms),) = cursor.fetchall()
    return Reservation(key=key, count=int(value), limit=limit, expires_ms=int(expires_ms))


def enforce(key: str, limit: int, window_ms: int, now_ms: int, what: str) -> Reservation:
    """`reserve`, or a 429 `rate_limited` with Retry-After (API routes) when over the limit."""
    slot = reserve(key, limit, window_ms, now_ms)
    if not slot.allowed:
        wait = slot.retry_after_s(now_ms)
        raise ApiError(
            429,
            "rate_limited",
            f"{what}; retry in {wait} s",
            headers={"Retry-After": str(wait)},
            retry_after_s=wait,
        )
    return slot


def refund(reservation: Reservation) -> None:
    """Give an attempt back (it turned out not to count). Only within the window it was
    counted in: a refund never lowers the count of a later window."""
    sql = _sql(
        f"UPDATE {_TABLE} SET value = CAST(CAST(value AS INTEGER) - 1 AS TEXT) "
        'WHERE "key" = ? AND expires_ms = ? AND CAST(value AS INTEGER) > 0'
    )
    with write_transaction():
        database.execute_sql(sql, (reservation.key, reservation.expires_ms))


def count(key: str, now_ms: int) -> int:
    """Attempts counted in the current window (0 when none is open)."""
    row = KeyValue.get_or_none(KeyValue.key == key)
    if row is None or (row.expires_ms or 0) <= now_ms:
        return 0
    return int(row.value)


def forget_expired(prefix: str, now_ms: int) -> int:
    """Delete the ended windows (or other expiring rows) whose keys start with `prefix`."""
    with write_transaction():
        return (
            KeyValue.delete()
            .where(KeyValue.key.startswith(prefix) & (KeyValue.expires_ms <= now_ms))
            .execute()
        )
