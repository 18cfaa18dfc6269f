"""The nightly fold: the scoring sums kept day by day instead of recomputed from columns.

Production scores once a night from database columns (core.features.compute_features sums
~120 days of events with bincounts). The simulator scores every simulated night, so it keeps
the same `UserSums` running instead: each day's per-user totals (core.day_totals) are added to
every window, and the totals of the day that leaves a window are taken off it. Every sum is
an integer, so the running sums equal the batch sums exactly, and `features_from` /
`activity_from` — the same functions the batch path ends in — turn them into the same
Features and Activity. The daily activity index is stored for the 29 days the baseline and
warning read, exactly as the batch path computes it for those days.

    fold = DailyFold(n_users)
    for each day:  fold.add_day(DayTotals(...))      # consecutive days; an empty day is fine
                   scores = ...  # core.score_state.ScoreState, which keeps one
"""

from __future__ import annotations

from collections import deque
from dataclasses import fields

import numpy as np

from backend.core.activity import (
    BASELINE_OFFSETS,
    HISTORY_DAYS,
    WARNING_DAYS,
    Activity,
    activity_from,
    index_from_sums,
)
from backend.core.calendar import TermCalendar
from backend.core.columns import FIRST_NONE, LAST_NONE
from backend.core.day_totals import DayTotals
from backend.core.features import (
    LOOKBACK_WIDTH,
    ON_READ,
    Features,
    UserSums,
    features_from,
    usual_hour,
)
from backend.core.kept_day import COLUMNS as _COLUMNS
from backend.core.kept_day import COMPACT_AFTER, KeptDay
from backend.core.repeat_purchases import PurchaseSpan, purchase_span

# Which day total feeds which sum, per window width (None: all time). "visited" is a day with
# any event, "ordered" a day with any order.
WINDOWED: dict[int | None, tuple[tuple[str, str], ...]] = {
    7: (
        ("visit_days_7", "visited"),
        ("orders_7", "orders"),
        ("session_ms_7", "session_ms"),
        ("interactions_7", "interactions"),
    ),
    14: (("visit_days_14", "visited"), ("orders_14", "orders")),
    30: (
        ("visit_days_30", "visited"),
        ("orders_30", "orders"),
        ("spend_fen_30", "spend_fen"),
        ("session_ms_30", "session_ms"),
        ("interactions_30", "interactions"),
    ),
    90: (("visit_days_90", "visited"), ("orders_90", "orders"), ("spend_fen_90", "spend_fen")),
    LOOKBACK_WIDTH: (
        ("events", "events"),
        ("night_events", "night_events"),
        ("weekend_events", "weekend_events"),
        ("hour_sin", "hour_sin"),
        ("hour_cos", "hour_cos"),
        ("invites", "invites"),
        ("content", "content"),
    ),
    None: (
        ("orders_total", "orders"),
        ("spend_fen_total", "spend_fen"),
        ("coupon_orders_total", "coupon_orders"),
        ("order_days", "ordered"),
    ),
}


_HOUR_COLUMNS = ("events", "hour_sin", "hour_cos")  # the look-back sums the usual hour reads
_INDEX_COLUMNS = tuple(column for _, column in WINDOWED[7])  # what the activity index reads


def _fresh_sums(n: int) -> UserSums:
    def filled(name: str) -> np.ndarray:
        if name.startswith("first_"):
            return np.full(n, FIRST_NONE, dtype=np.int64)
        if name.startswith("last_"):
            return np.full(n, LAST_NONE, dtype=np.int64)
        return np.zeros(n, dtype=np.int64)

    return UserSums(**{f.name: filled(f.name) for f in fields(UserSums)})


def _drop_after() -> dict[int, set[str]]:
    """Day totals by the age (in days) after which no window reads them any more: the widest
    window that reads them, or 0 for those only the all-time sums read."""
    widest: dict[str, int] = {}
    for width, pairs in WINDOWED.items():
        for _, column in pairs:
            widest[column] = max(widest.get(column, 0), width or 0)
    out: dict[int, set[str]] = {}
    for column, width in widest.items():
        out.setdefault(width, set()).add(column)
    return out


_DROP_AFTER = _drop_after()


class DailyFold:
    """The scoring sums of `n_users` users, kept as consecutive days are added.

    Holds the last LOOKBACK_WIDTH days' totals (to take each off its windows when it leaves)
    and the activity index of the last HISTORY_DAYS days. Days before the first one added
    count as empty, as they would in columns that start on that day.
    """

    def __init__(self, n_users: int) -> None:
        self.n_users = int(n_users)
        self.day: int | None = None  # the last day added
        self._sums = _fresh_sums(self.n_users)
        self._kept: deque[KeptDay] = deque()
        self._index = np.zeros((HISTORY_DAYS, self.n_users))  # by day % HISTORY_DAYS
        # The repeat-purchase span (core.repeat_purchases.purchase_span) of the last
        # features() call, what it was computed for, and the users whose span may have moved
        # since.
        self._span: PurchaseSpan | None = None
        self._span_for: tuple[TermCalendar, np.ndarray | None] | None = None
        self._span_stale: list[np.ndarray] = []
        self._span_capped = np.zeros(0, dtype=np.intp)
        # The usual hour of the last features(copy=False) call, and the users whose look-back
        # hour sums moved since (only those are worked out again).
        self._hour: np.ndarray | None = None
        self._hour_stale: list[np.ndarray] = []

    def add_day(self, totals: DayTotals) -> None:
        """Fold in the day after the last one (any day to start with), or more of the last
        day: a nightly job scores a day before its activity (an empty day in the morning) and
        the activity is added to it afterwards, as the database would fill up."""
        day = int(totals.day)
        if self.day is not None and day not in (self.day, self.day + 1):
            raise ValueError(
                f"day {day} cannot follow day {self.day}: days are added one at a time, "
                "in order, none missing (add an empty DayTotals for a day without activity)"
            )
        user = np.asarray(totals.user, dtype=np.intp)
        if user.size and (user[0] < 0 or user[-1] >= self.n_users or np.any(user[1:] <= user[:-1])):
            raise ValueError("DayTotals.user must be sorted, unique and within 0..n_users-1")
        for name in _COLUMNS:
            column = getattr(totals, name)
            if column is not None and np.shape(column) != user.shape:
                raise ValueError(f"DayTotals.{name} must have one value per user row")
        kept = KeptDay.of(totals, user)
        if day == self.day:
            self._extend_last_day(kept, user)
            return
        for pairs in WINDOWED.values():
            self._apply(kept, pairs, np.add.at)
        for width, pairs in WINDOWED.items():
            if width is not None:
                leaving = self._kept_day(day - width)
                if leaving is not None:
                    self._apply(leaving, pairs, np.subtract.at)
        self._mark_seen(day, kept)
        kept.drop(_DROP_AFTER.get(0, set()))
        self._kept.append(kept)
        while self._kept and self._kept[0].day <= day - LOOKBACK_WIDTH:
            self._kept.popleft()
        for width, names in _DROP_AFTER.items():
            if width:
                older = self._kept_day(day - width)
                if older is not None:
                    older.drop(names)
        older = self._kept_day(day - COMPACT_AFTER)
        if older is not None:
            older.compact()
        self._update_index(day, kept)
        self.day = day

    def resize(self, keep: np.ndarray | None = None, add: int = 0) -> None:
        """Drop the users where `keep` (bool per user) is false, renumbering the rest in
        order, then append `add` users never seen: what an erasure (the user and their events
        gone from the database) and new sign-ups do to production's columns."""
        keep = np.ones(self.n_users, dtype=bool) if keep is None else np.asarray(keep, bool)
        if keep.shape != (self.n_users,) or add < 0:
            raise ValueError("keep must have one flag per user and add must be >= 0")
        new_index = np.cumsum(keep) - 1
        fresh = _fresh_sums(int(add))
        for f in fields(UserSums):
            kept_rows = getattr(self._sums, f.name)[keep]
            setattr(self._sums, f.name, np.concatenate([kept_rows, getattr(fresh, f.name)]))
        for day in self._kept:
            day.renumber(keep, new_index)
        self._index = np.concatenate(
            [self._index[:, keep], np.zeros((HISTORY_DAYS, int(add)))], axis=1
        )
        self.n_users = int(keep.sum()) + int(add)
        self._span, self._span_for, self._span_stale = None, None, []  # worked out afresh
        self._span_capped = np.zeros(0, dtype=np.intp)
        self._hour, self._hour_stale = None, []

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The fold as plain arrays and a JSON-able header, to be kept between processes
        (production's nightly job) without pickle: a file that unpickles is code. The usual
        hour and repeat-purchase span caches are left out: worked out afresh after
        `from_arrays`, as on a fresh fold's first night (the same numbers).

        Returns
        -------
        (header, arrays) : header holds the user count, the last day and the kept days
        (KeptDay.header); arrays are "sums.<UserSums field>" (int64 per user), "index"
        (float64, HISTORY_DAYS × n_users, by day % HISTORY_DAYS) and the kept days' "kept.<k>".
        """
        arrays = {f"sums.{f.name}": getattr(self._sums, f.name) for f in fields(UserSums)}
        arrays["index"] = self._index
        kept = [k.header(arrays) for k in self._kept]
        return {"n_users": self.n_users, "day": self.day, "kept": kept}, arrays

    @classmethod
    def from_arrays(cls, header: dict, arrays: dict[str, np.ndarray]) -> DailyFold:
        """The fold `to_arrays` gave; a ValueError if the arrays do not fit the header.

        Parameters
        ----------
        header, arrays : as `to_arrays` returns them (arrays as np.load reads them back).

        Returns
        -------
        DailyFold whose next days and scores are those of the fold that was saved.
        """
        fold = cls(int(header["n_users"]))
        n, fold.day = fold.n_users, None if header["day"] is None else int(header["day"])
        for f in fields(UserSums):
            values = np.asarray(arrays[f"sums.{f.name}"])
            if values.shape != (n,) or values.dtype != np.int64:
                raise ValueError(f"sums.{f.name} is not {n} int64 values")
            setattr(fold._sums, f.name, values)
        fold._index = np.asarray(arrays["index"])
        if fold._index.shape != (HISTORY_DAYS, n) or fold._index.dtype != np.float64:
            raise ValueError(f"index is not {HISTORY_DAYS} x {n} float64 values")
        fold._kept.extend(KeptDay.from_header(k, arrays, n) for k in header["kept"])
        return fold

    def _mark_seen(self, day: int, kept: KeptDay) -> None:
        """Last/first visit and order days of the users active in `kept`."""
        s = self._sums
        if "visited" in kept.columns:
            rows = kept.columns["visited"][0]
            s.last_visit[rows] = day
            new = rows[s.first_visit[rows] == FIRST_NONE]
            s.first_visit[new] = day
            self._span_stale.append(new)
        if "ordered" in kept.columns:
            rows = kept.columns["ordered"][0]
            s.last_order[rows] = day
            new = rows[s.first_order[rows] == FIRST_NONE]
            s.first_order[new] = day
            self._span_stale.append(rows)
        if sum(r.size for r in self._span_stale) > self.n_users:
            self._span, self._span_stale = None, []  # cheaper to compute afresh

    def _extend_last_day(self, more: KeptDay, user: np.ndarray) -> None:
        """Add more totals to the last day: into every window it is in (nothing leaves), and
        into the day's kept totals so they leave their windows with it later. A user already
        active that day is not counted a second visit or order day."""
        day = int(self.day)
        today = self._kept[-1]
        for flag in ("visited", "ordered"):
            if flag in more.columns and flag in today.columns:
                rows = more.columns[flag][0]
                more.columns[flag] = (rows[~np.isin(rows, today.columns[flag][0])], None)
        for pairs in WINDOWED.values():
            self._apply(more, pairs, np.add.at)
        self._mark_seen(day, more)
        more.drop(_DROP_AFTER.get(0, set()))
        for name, (rows, values) in more.columns.items():
            if name not in today.columns:
                today.columns[name] = (rows, values)
                continue
            rows0, values0 = today.columns[name]
            if values0 is None and values is None:
                merged = None
            else:
                ones0 = np.ones(rows0.size, np.int64) if values0 is None else values0
                ones = np.ones(rows.size, np.int64) if values is None else values
                merged = np.concatenate([ones0.astype(np.int64), ones.astype(np.int64)])
            today.columns[name] = (np.concatenate([rows0, rows]), merged)
        # Only the rows of the added totals can have moved since the day's index was made.
        self._update_index(day, more, extending=True, rows=user)

    def _update_index(
        self, day: int, kept: KeptDay, extending: bool = False, rows: np.ndarray | None = None
    ) -> None:
        """Today's activity index. It is a function of each user's 7-day sums alone, which
        moved only for users active today or 7 days ago: the others keep yesterday's value
        (or, when the day is being extended, the value it already has; `rows` then covers
        every user whose sums the extension moved)."""
        s = self._sums
        if rows is None:
            touched = [
                k.columns[c][0]
                for k in (kept, self._kept_day(day - 7))
                if k is not None
                for c in _INDEX_COLUMNS
                if c in k.columns
            ]
            rows = self._union(touched)
        slot = self._index[day % HISTORY_DAYS]
        if (self.day is None and not extending) or 2 * rows.size > self.n_users:
            slot[:] = index_from_sums(s.visit_days_7, s.session_ms_7, s.orders_7, s.interactions_7)
            return
        if not extending:
            slot[:] = self._index[(day - 1) % HISTORY_DAYS]
        if rows.size:
            inputs = (s.visit_days_7, s.session_ms_7, s.orders_7, s.interactions_7)
            slot[rows] = index_from_sums(*(a[rows] for a in inputs))

    def _union(self, parts: list[np.ndarray]) -> np.ndarray:
        """The distinct users in some sorted row arrays, sorted."""
        parts = list({id(p): p for p in parts if p.size}.values())  # columns share arrays
        if len(parts) <= 1:
            return parts[0].astype(np.intp, copy=False) if parts else np.zeros(0, dtype=np.intp)
        mask = np.zeros(self.n_users, dtype=bool)
        for p in parts:
            mask[p] = True
        return np.flatnonzero(mask)

    def _kept_day(self, day: int) -> KeptDay | None:
        if not self._kept:
            return None
        i = day - self._kept[0].day
        return self._kept[i] if 0 <= i < len(self._kept) else None

    def _apply(self, kept: KeptDay, pairs: tuple[tuple[str, str], ...], op) -> None:
        for sum_name, column in pairs:
            entry = kept.columns.get(column)
            if entry is not None:
                rows, values = entry
                if self._hour is not None and column in _HOUR_COLUMNS:
                    self._hour_stale.append(rows)
                    if len(self._hour_stale) > 3 * LOOKBACK_WIDTH:  # not asked for in a while
                        self._hour, self._hour_stale = None, []
                # int64 into int64 at intp rows: np.ufunc.at is ~100× slower when it casts.
                values = 1 if values is None else values.astype(np.int64, copy=False)
                op(getattr(self._sums, sum_name), rows.astype(np.intp, copy=False), values)

    def _as_of(self, as_of: int | None) -> int:
        if self.day is None:
            raise ValueError("no day has been added yet")
        if as_of is not None and int(as_of) != self.day:
            raise ValueError(f"the fold is at day {self.day}, not {as_of}")
        return self.day

    def sums(self, as_of: int | None = None) -> UserSums:
        """A copy of the running sums as of the last day added."""
        self._as_of(as_of)
        return UserSums(**{f.name: getattr(self._sums, f.name).copy() for f in fields(UserSums)})

    def features(
        self,
        calendar: TermCalendar,
        as_of: int | None = None,
        first_seen: np.ndarray | None = None,
        last_seen: np.ndarray | None = None,
        *,
        copy: bool = True,
    ) -> Features:
        """What `compute_features` gives on the same days' columns (events of the last
        LOOKBACK_WIDTH days, orders all time), as of the last day added.

        Features that are running sums as they stand (visit days, orders, spend, ...) are
        copies; with `copy` false they are the fold's own arrays, read-only, and the next
        add_day or features() changes them: for a caller done with the night's features by
        then (17 copies of a column of a million users are ~20 ms). With `copy` false the
        features no scoring rule reads (core.features.ON_READ) are also only worked out if
        read (`features_from(lazy=True)`): by then too.
        """
        day = self._as_of(as_of)
        span = self._purchase_span(day, calendar, first_seen)
        hour = None if copy else self._usual_hour()
        feats = features_from(
            self._sums,
            day,
            calendar,
            first_seen,
            last_seen,
            copy=copy,
            span=span,
            lazy=not copy,
            hour=hour,
        )
        if not copy:
            owned = {id(getattr(self._sums, f.name)) for f in fields(UserSums)}
            owned |= {id(getattr(span, f.name)) for f in fields(PurchaseSpan)}
            owned.add(id(hour))
            for f in fields(feats):
                if f.name in ON_READ:
                    continue  # worked out afresh when read: never the fold's own
                value = getattr(feats, f.name)
                if id(value) in owned:
                    value = value.view()
                    value.flags.writeable = False
                    setattr(feats, f.name, value)
        return feats

    def _usual_hour(self) -> np.ndarray:
        """The usual hour (core.features.usual_hour) of every user, kept between calls and
        worked out again only for the users whose look-back hour sums moved since."""
        s = self._sums
        stale = sum(r.size for r in self._hour_stale)
        if self._hour is None or 2 * stale > self.n_users:
            self._hour = usual_hour(s.hour_sin, s.hour_cos, s.events)
        elif stale:
            rows = self._union(self._hour_stale)
            self._hour[rows] = usual_hour(s.hour_sin[rows], s.hour_cos[rows], s.events[rows])
        self._hour_stale = []
        return self._hour

    def _purchase_span(
        self, day: int, calendar: TermCalendar, first_seen: np.ndarray | None
    ) -> PurchaseSpan:
        """The repeat-purchase span, refreshed for the users whose first visit or orders
        moved since the last call (and those whose start was capped at that day, which moves
        with the day); computed afresh for another calendar or first_seen."""
        s = self._sums
        same = self._span_for is not None and self._span_for[0] == calendar
        if same:
            kept_seen = self._span_for[1]
            same = (first_seen is None and kept_seen is None) or (
                first_seen is not None
                and kept_seen is not None
                and np.array_equal(first_seen, kept_seen)
            )
        if not same or self._span is None:
            first_visit = (
                s.first_visit if first_seen is None else np.minimum(s.first_visit, first_seen)
            )
            self._span = purchase_span(
                s.order_days, s.first_order, s.last_order, first_visit, day, calendar
            )
            capped = np.flatnonzero(self._span.start == day)
            kept_seen = None if first_seen is None else np.array(first_seen, dtype=np.int64)
            self._span_for = (calendar, kept_seen)
        else:
            rows = self._union([*self._span_stale, self._span_capped])
            first_visit = s.first_visit[rows]
            if first_seen is not None:
                first_visit = np.minimum(first_visit, np.asarray(first_seen)[rows])
            fresh = purchase_span(
                s.order_days[rows],
                s.first_order[rows],
                s.last_order[rows],
                first_visit,
                day,
                calendar,
            )
            for f in fields(PurchaseSpan):
                getattr(self._span, f.name)[rows] = getattr(fresh, f.name)
            capped = rows[fresh.start == day]
        self._span_capped = capped
        self._span_stale = []
        return self._span

    def activity(
        self, calendar: TermCalendar, as_of: int | None = None, *, copy: bool = True
    ) -> Activity:
        """What `compute_activity` gives on the same days' columns. With `copy` false the
        recent indices (and today's) may be a read-only view of the fold's own days, which
        the next add_day changes (see `features`)."""
        day = self._as_of(as_of)
        slot = day % HISTORY_DAYS
        recent: list[np.ndarray] | np.ndarray
        if not copy and slot >= WARNING_DAYS - 1:  # today, yesterday, ... are adjacent rows
            recent = self._index[slot - WARNING_DAYS + 1 : slot + 1][::-1]
            recent.flags.writeable = False
        else:
            recent = [self._index[(day - k) % HISTORY_DAYS] for k in range(WARNING_DAYS)]
        past = [self._index[(day - k) % HISTORY_DAYS] for k in BASELINE_OFFSETS]
        return activity_from(recent, past, calendar, day)
