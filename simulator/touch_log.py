"""The simulator's books: every decided touch, day by day, and what came of it.

What production keeps in its touch table the simulator keeps here, one block of columns per
decided day (`DayTouches`), and attributes outcomes to it as the simulated days pass, with the
backend's attribution window (`core.attribution.in_window`). The times follow production's:
the job runs at JOB_HOUR each morning, a simulated user's events of a day happen at their
usual hour and VISIT_MINUTE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from backend.core.attribution import in_window
from backend.core.calendar import MS_PER_DAY, day_start_ms
from backend.core.metrics import RETENTION_DAYS
from backend.core.policy.guards import HOUR_MS
from backend.core.recall import RETENTION_TAIL_DAYS, retained_on

SENT, HELD_OUT, SKIP = 0, 1, 2  # a touch's status in the books
JOB_HOUR = 2  # China time the daily job runs, before anyone is up
VISIT_MINUTE = 30  # a simulated visit happens at the user's usual hour and this minute


def job_ms(day: int) -> int:
    """When the campaign job of simulated `day` runs (UTC epoch ms)."""
    return day_start_ms(day) + JOB_HOUR * HOUR_MS


def visit_ms(day: int, usual_hour: np.ndarray) -> np.ndarray:
    """When each user's events of `day` happen (all of a visit's events share it)."""
    return day_start_ms(day) + usual_hour.astype(np.int64) * HOUR_MS + VISIT_MINUTE * 60_000


@dataclass
class DayTouches:
    """The touches decided one morning (sent, held out or skipped) and their outcomes."""

    day: int
    user: np.ndarray
    step: np.ndarray
    channel: np.ndarray
    arm: np.ndarray
    status: np.ndarray
    sent_ms: np.ndarray  # when due (sent touches) or would have been (held out)
    tier: np.ndarray
    # Term days since the user's last visit in the morning's scores the touch was decided on
    # (what production's score snapshot of the touch's day holds): who was lapsed at decision
    # is read from it (core.recall), as the live report reads it.
    term_days_silent: np.ndarray
    value_fen: np.ndarray  # the user's value when decided
    message_cost_fen: np.ndarray
    coupon_face_fen: np.ndarray  # 0: no coupon
    coupon_min_fen: np.ndarray
    uplift_x: np.ndarray  # (touches × uplift FEATURES) from the day's scores, as stored
    outcome: dict[str, np.ndarray] = field(default_factory=dict)
    learnt: np.ndarray | None = None  # folded into the policy's learning (once final)
    _last_sent_ms: int | None = field(default=None, repr=False, compare=False)

    OUTCOMES: ClassVar[dict] = {
        "returned": bool,
        "return_ms": np.int64,  # -1 until the user returns
        "return_day": np.int64,
        "ordered": bool,
        "revenue_fen": np.int64,  # orders in the window
        "redeemed": bool,  # its coupon was used on an order in the window
        # retained_d7, retained_d30: a visit in the week from D7 / D30 after the return
        # (core.recall.retained_on).
        **{f"retained_d{d}": bool for d in RETENTION_DAYS},
        # The same touch in the untreated twin: what would have happened anyway.
        "returned_twin": bool,
        "revenue_fen_twin": np.int64,
    }

    def __post_init__(self) -> None:
        for name, dtype in self.OUTCOMES.items():
            fill = -1 if name in ("return_ms", "return_day") else 0
            self.outcome.setdefault(name, np.full(self.user.size, fill, dtype=dtype))
        if self.learnt is None:
            self.learnt = self.status != SENT  # only sent touches teach the policy

    @property
    def measured(self) -> np.ndarray:
        """Sent or held out: the touches whose outcome is observed."""
        return self.status != SKIP

    @property
    def last_sent_ms(self) -> int:
        """When the block's last touch goes out (worked out once: the block never changes
        its touches, only their outcomes)."""
        if self._last_sent_ms is None:
            self._last_sent_ms = int(self.sent_ms.max())
        return self._last_sent_ms

    def subset(self, rows: np.ndarray) -> DayTouches:
        """These rows of the block (outcomes not yet attributed: taken when added)."""
        kept = ("day", "outcome", "learnt", "_last_sent_ms")
        names = [f.name for f in fields(self) if f.name not in kept]
        return DayTouches(self.day, *(getattr(self, n)[rows] for n in names))


class TouchLog:
    """Every decided touch, as one block of columns per day."""

    def __init__(self) -> None:
        self.days: list[DayTouches] = []  # sent and held-out touches: measured
        self.skipped: list[DayTouches] = []  # skips (the ledger's), never measured
        self.redeemed_today: dict[int, tuple[int, int]] = {}  # user -> (touch day, step)
        self.redeemed_face_today = 0  # face value of the coupons redeemed today, fen

    def spent_on(self, day: int) -> int:
        """Money actually spent on `day` (fen): fees of the messages decided and sent that
        day, plus the face value of the coupons redeemed that day (docs/simulator.md)."""
        fees = 0
        for b in reversed(self.days):  # blocks are kept in day order: only the newest are read
            if b.day < day:
                break
            if b.day == day:
                fees += int(b.message_cost_fen.sum())
        return fees + self.redeemed_face_today

    def add(self, block: DayTouches) -> None:
        """Keep a day's touches: the measured ones apart from the skips, which only the
        ledger reads (attribution and the caps would walk past them every day)."""
        skip = block.status == SKIP
        self.days.append(block.subset(~skip))
        self.skipped.append(block.subset(skip))

    def column(self, name: str, skipped: bool = True) -> np.ndarray:
        """One column over every touch (sent and held out, then the skips)."""
        blocks = self.days + (self.skipped if skipped else [])
        if not blocks:
            return np.zeros(0, dtype=np.int64)
        if name == "day":
            return np.concatenate([np.full(b.user.size, b.day, np.int64) for b in blocks])
        if name in DayTouches.OUTCOMES:
            return np.concatenate([b.outcome[name] for b in blocks])
        return np.concatenate([getattr(b, name) for b in blocks])

    @property
    def returned(self) -> np.ndarray:
        """Whether each touch's user came back in its window (every touch, skips included)."""
        return self.column("returned")

    @property
    def returned_twin(self) -> np.ndarray:
        """Whether the untreated twin of each touch's user came back in the same window."""
        return self.column("returned_twin")

    def recent(self, since_day: int) -> list[DayTouches]:
        """The measured blocks decided on `since_day` or later (what attribution still reads)."""
        return [b for b in self.days if b.day >= since_day]

    def record_day(self, today: int, window_days: int, campus, twin, usual_hour) -> np.ndarray:
        """Attribute one day (`campus`/`twin`: its DayActivity) to the open touches with the
        backend's attribution window (`core.attribution.in_window`): a simulated user has at
        most one visit a day, at `visit_ms`, so each touch is checked against it directly.
        Returns which of today's orders used a coupon."""
        window = window_days * MS_PER_DAY
        used_coupon = np.zeros(campus.visited.size, dtype=bool)
        self.redeemed_today = {}
        self.redeemed_face_today = 0
        # No visit of today comes before this: a block whose last send is more than a window
        # earlier has no touch left open, only returns whose retention weeks may still run.
        earliest_visit = visit_ms(today, np.zeros(1, dtype=np.int8))[0]
        for b in self.recent(today - window_days - RETENTION_TAIL_DAYS - 1):
            if b.user.size == 0:
                continue
            if earliest_visit - b.last_sent_ms > window:
                _retention(b, today, campus)
                continue
            o, u = b.outcome, b.user
            at = visit_ms(today, usual_hour[u])  # the block's users' visit times only
            open_ = b.measured & in_window(b.sent_ms, at, window)
            came = open_ & campus.visited[u]
            first = came & (o["return_ms"] < 0)
            o["return_ms"][first] = at[first]
            o["return_day"][first] = today
            o["returned"] |= came
            bought = open_ & campus.ordered[u]
            o["ordered"] |= bought
            o["revenue_fen"] += np.where(bought, campus.amount_fen[u], 0)
            self._redeem(b, bought, campus, used_coupon)
            back = campus.visited[u]
            for d in RETENTION_DAYS:
                o[f"retained_d{d}"] |= back & retained_on(o["return_day"], today, d)
            if twin is not None:
                o["returned_twin"] |= open_ & twin.visited[u]
                o["revenue_fen_twin"] += np.where(open_ & twin.ordered[u], twin.amount_fen[u], 0)
        return used_coupon

    def _redeem(self, b: DayTouches, bought, campus, used_coupon: np.ndarray) -> None:
        """A sent coupon is redeemed on its user's first order in the window that meets the
        coupon's minimum spend; one coupon per order (the earliest decided)."""
        u = b.user
        ok = bought & (b.status == SENT) & (b.coupon_face_fen > 0) & ~b.outcome["redeemed"]
        ok &= campus.amount_fen[u] >= b.coupon_min_fen
        ok &= ~used_coupon[u]
        idx = np.flatnonzero(ok)
        _, first = np.unique(u[idx], return_index=True)
        idx = idx[first]
        b.outcome["redeemed"][idx] = True
        used_coupon[u[idx]] = True
        self.redeemed_face_today += int(b.coupon_face_fen[idx].sum())
        for i in idx.tolist():
            self.redeemed_today[int(u[i])] = (b.day, int(b.step[i]))


def _retention(b: DayTouches, today: int, campus) -> None:
    """A closed block's part of `record_day`: a visit today counts toward the D7/D30
    retention of the touches that brought their users back (only those can: retained_on)."""
    o = b.outcome
    back = np.flatnonzero(o["return_day"] >= 0)
    if back.size == 0:
        return
    came = campus.visited[b.user[back]]
    for d in RETENTION_DAYS:
        o[f"retained_d{d}"][back] |= came & retained_on(o["return_day"][back], today, d)
