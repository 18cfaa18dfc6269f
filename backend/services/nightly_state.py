"""Production's nightly scoring state: a night loads its recent days' rows, not 121 days.

`score_tenant` scores a tenant on `day` from a `ScoreState` (core.score_state) at that day,
which this module hands it, with first_seen and last_seen as `load_columns` gives them.

The state is kept (services/nightly_store.py) at the **closed day** `day - OPEN_DAYS`, not at
`day`: the mini-program accepts events up to 7 days late (a phone's offline queue,
event_validation.MP_MAX_AGE_MS), so the last OPEN_DAYS days may still fill up after a night
has read them and are read again each night. Days up to the closed day can only change by
an import of history, a refund or a coupon linked late, or an erasure.

A night goes on from the kept state only when all of these hold, and otherwise rebuilds it
from the database (the look-back's events, every paid order, all-time first and last
events) and keeps the rebuilt one:

* the kept state is this tenant's (id, appid, creation time), in this format, for the same
  settings (calendar, tier thresholds) and the same window constants;
* its closed day is at most MAX_ADVANCE days behind tonight's and not ahead of it;
* the users kept are a prefix of tonight's in id order (erased users are dropped, new ones
  come after every kept id and are appended);
* the database still holds, up to the closed day, exactly the rows the state took in: the
  count of events, and the paid orders of users not erased (count, fen, sum of ids, with a
  coupon), equal the kept ledger's totals over the users kept (nightly_rows.Ledger). The
  database's totals are read before the rows, and the ledger counts the rows as read, so a
  row landing in between makes the next night's totals differ (a rebuild), never agree
  with a state that lacks it.

Then the state is advanced over the days that closed since (their rows loaded once), kept
again, and taken on through the open days to `day` in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import numpy as np

from backend.core.calendar import MS_PER_DAY, TermCalendar, day_start_ms
from backend.core.columns import EventColumns, OrderColumns
from backend.core.day_totals import DayTotals
from backend.core.features import LOOKBACK_DAYS, LOOKBACK_WIDTH
from backend.core.rolling import HISTORY_DAYS
from backend.core.score_state import ScoreState
from backend.core.tiers import TierConfig
from backend.services import nightly_store
from backend.services.event_validation import MP_MAX_AGE_MS
from backend.services.nightly_rows import (
    Ledger,
    closed_totals,
    event_columns,
    event_query,
    paid_orders,
    seen_until,
    users_until,
)
from backend.store.models import Tenant

FORMAT = 1
# Days the phone's offline queue can still add to after a night has run: an event is
# accepted up to MP_MAX_AGE_MS before its arrival, and a night scores a day that has begun.
OPEN_DAYS = MP_MAX_AGE_MS // MS_PER_DAY + 1
MAX_ADVANCE = 31  # a kept state further behind is rebuilt (as many rows to load either way)
CHECK = True  # tests turn the database-totals check off to watch a stale state go wrong


class Stale(Exception):
    """The kept state cannot be taken on exactly: the message says why."""


@dataclass
class Night:
    """One night's scoring input: the state at the night's day and its users.

    user_ids : int64 database ids, in the state's order (the snapshot's rows).
    first_seen, last_seen : int64 China days per user, as load_columns gives them.
    rebuilt : why the state was rebuilt from the database ("" when it went on from the kept
        one); kept_bytes: the size of the state stored tonight (0: none stored).
    """

    user_ids: np.ndarray
    state: ScoreState
    first_seen: np.ndarray
    last_seen: np.ndarray
    rebuilt: str
    kept_bytes: int = 0


def _take(cols, keep: np.ndarray):
    return type(cols)(*(getattr(cols, f.name)[keep] for f in fields(cols)))


def settings_key(calendar: TermCalendar, config: TierConfig) -> str:
    """A digest of the settings scoring reads and the window constants the state is built
    with: a state kept under other ones is rebuilt."""
    text = repr((calendar, config, LOOKBACK_WIDTH, HISTORY_DAYS, OPEN_DAYS))
    return hashlib.sha256(text.encode()).hexdigest()


def _identity(tenant: Tenant, settings: str) -> dict:
    return {
        "format": FORMAT,
        "tenant": tenant.id,
        "appid": tenant.appid,
        "tenant_created_ms": tenant.created_ms,
        "settings": settings,
    }


def night_of(tenant: Tenant, day: int, settings: str) -> Night:
    """The state at `day` for `score_tenant`: taken on from the kept one when it is exactly
    what the database holds, else rebuilt from the database; kept for the next night.

    Parameters
    ----------
    tenant : whose night.
    day : the China day being scored.
    settings : `settings_key` of the tenant's calendar and thresholds.

    Returns
    -------
    Night.
    """
    stored = nightly_store.load(tenant.id)
    ids, created_day = users_until(tenant.id, day_start_ms(day + 1))
    closed = day - OPEN_DAYS
    if stored is None:
        return _rebuild(tenant, day, ids, created_day, settings, "no kept state", True)
    header, arrays = stored
    try:
        return _go_on(tenant, day, ids, created_day, settings, header, arrays)
    except Stale as exc:
        ahead = isinstance(header.get("closed_day"), int) and header["closed_day"] > closed
        return _rebuild(tenant, day, ids, created_day, settings, str(exc), not ahead)
    except (KeyError, TypeError, ValueError) as exc:  # an unreadable state is no state
        reason = f"kept state unreadable: {type(exc).__name__}"
        return _rebuild(tenant, day, ids, created_day, settings, reason, True)


def _go_on(tenant, day, ids, created_day, settings, header, arrays) -> Night:
    """The night from the kept state (Stale when it cannot be used; see the module)."""
    closed, was = day - OPEN_DAYS, header["closed_day"]
    if {k: header.get(k) for k in _identity(tenant, settings)} != _identity(tenant, settings):
        raise Stale("kept state is another tenant's, format or settings")
    if not 0 <= closed - was <= MAX_ADVANCE:
        raise Stale(f"kept state is at day {was}, tonight's closed day is {closed}")
    old_ids = arrays["user_ids"]
    keep = np.isin(old_ids, ids)
    if not np.array_equal(ids[: int(keep.sum())], old_ids[keep]):
        raise Stale("tonight's users are not the kept ones followed by new ones")
    added = ids.size - int(keep.sum())
    ledger = Ledger.from_arrays(arrays, old_ids.size).resized(keep, added)
    if CHECK and closed_totals(tenant.id, day_start_ms(was + 1)) != ledger.totals():
        raise Stale("rows dated on or before the kept day changed (late rows, refunds, imports)")
    fold = {k[len("fold.") :]: v for k, v in arrays.items() if k.startswith("fold.")}
    state = ScoreState.from_arrays(header["fold"], fold)
    if state.day != was or state.n_users != old_ids.size:
        raise Stale("kept state does not match its header")
    state.resize(keep, added)
    since = day_start_ms(was + 1)
    events, orders, order_ids = _rows(tenant.id, since, since, day, ids)
    rows = (events, orders, order_ids)
    kept_bytes = _close_days(tenant, settings, state, ledger, ids, rows, was, day)
    recent = events.day > closed
    _open_days(state, _take(events, recent), _take(orders, orders.day > closed), closed, day)
    first_seen, last_seen = ledger.seen(created_day, _take(events, recent))
    return Night(ids, state, first_seen, last_seen, "", kept_bytes)


def _rows(tenant_id: int, events_from: int, orders_from: int | None, day: int, ids):
    """The users' events and paid orders (with their ids) from the given UTC ms (orders:
    all time for None) to the end of `day`."""
    hi = day_start_ms(day + 1)
    events = event_columns(event_query(tenant_id, events_from, hi), ids)
    orders, order_ids = paid_orders(tenant_id, orders_from, hi, ids)
    return events, orders, order_ids


def _close_days(tenant, settings, state, ledger, ids, rows, was, day) -> int:
    """Advance the state and ledger from day `was` over the days closed since, and keep
    them if any did; the bytes kept (0: nothing kept)."""
    events, orders, order_ids = rows
    closed = day - OPEN_DAYS
    ev, od = events.day <= closed, orders.day <= closed
    ev_cols, od_cols = _take(events, ev), _take(orders, od)
    for d in range(was + 1, closed + 1):
        state.add_day(DayTotals.from_columns(d, ev_cols, od_cols))
    ledger.add(ev_cols, od_cols, order_ids[od])
    if closed == was:
        return 0
    return _keep(tenant, settings, state, ledger, ids, day)


def _keep(tenant, settings: str, state: ScoreState, ledger: Ledger, ids, day: int) -> int:
    """Store the state (at the closed day) with its ledger and users; the bytes stored."""
    closed = day - OPEN_DAYS
    header, fold = state.to_arrays()
    arrays = {f"fold.{k}": v for k, v in fold.items()}
    arrays.update(ledger.arrays())
    arrays["user_ids"] = ids
    meta = {**_identity(tenant, settings), "closed_day": closed, "night": day, "fold": header}
    return nightly_store.save(tenant.id, meta, arrays)


def _open_days(state: ScoreState, events: EventColumns, orders: OrderColumns, closed, day):
    """Take the state on from the closed day to `day` (the open days, not kept)."""
    for d in range(closed + 1, day + 1):
        state.add_day(DayTotals.from_columns(d, events, orders))


def _rebuild(tenant, day, ids, created_day, settings, reason: str, keep: bool) -> Night:
    """The night from the database as load_columns reads it, the state built at the closed
    day (kept when `keep`) and taken on to `day`."""
    closed = day - OPEN_DAYS
    # Totals first, rows after: a row landing in between is in the state but not the
    # ledger, so the next night's check fails rather than passing without it.
    ledger = seen_until(tenant.id, day_start_ms(closed + 1), ids)
    events, orders, order_ids = _rows(tenant.id, day_start_ms(day - LOOKBACK_DAYS), None, day, ids)
    ev, od = events.day <= closed, orders.day <= closed
    state = ScoreState.from_columns(_take(events, ev), _take(orders, od), ids.size, closed)
    ledger.add(_take(events, np.zeros(events.day.size, bool)), _take(orders, od), order_ids[od])
    kept_bytes = _keep(tenant, settings, state, ledger, ids, day) if keep else 0
    recent = _take(events, ~ev)
    _open_days(state, recent, _take(orders, ~od), closed, day)
    first_seen, last_seen = ledger.seen(created_day, recent)
    return Night(ids, state, first_seen, last_seen, reason, kept_bytes)
