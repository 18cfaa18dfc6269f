"""The nightly scoring state: a night's scores from what changed since the last night.

`score_users` (core.scoring) recomputes every score of every user from ~120 days of event
columns; it stays the oracle. `ScoreState` keeps the day-by-day fold of the same integer sums
(core.rolling) and works out the night's `Scores` from it, doing per-row work only where a
row can change or is read:

* the sums move only for users active that day or whose day leaves a window (the fold);
  the activity index likewise (the fold recomputes it only for those users);
* a tier is decided on the users silent for fewer than `churned_silent_days` term days
  only: everyone else is churned by the first rule, whatever the other inputs say (after
  warm-up ~86% of a simulated campus), and P(alive) is worked out only for the users silent
  for fewer than `risk_silent_days` too, the only ones whose tier it can move;
* RFM, segment, P(alive), expected orders, value and worth-recalling are left to be
  worked out when read (`LazyScores`), over every user as `score_users` does, or for the
  rows a decision reads (`LazyScores.rows`), with the population-wide quantities they
  depend on (quintile cut points, the tenant's average order value, BG/NBD's tables) taken
  over the whole population.

Every number is the one `score_users` gives on the same day's columns, bit for bit:
tests/test_core_score_state.py compares them day by day on random histories.

    state = ScoreState(n_users)           # or ScoreState.from_columns(...) from a snapshot
    each night:  state.add_day(DayTotals(...))              # the day's activity
                 scores = state.scores(calendar, config, first_seen=..., params=...)
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from backend.core import bgnbd
from backend.core.activity import Activity
from backend.core.calendar import TermCalendar
from backend.core.columns import EventColumns, OrderColumns
from backend.core.day_totals import DayTotals
from backend.core.features import Features
from backend.core.rfm import rfm_scores, segments
from backend.core.rolling import DailyFold
from backend.core.scoring import Scores, fit_for
from backend.core.tiers import CHURNED, REASONS, TierConfig, assign_tiers
from backend.core.value import expected_value_fen, tenant_aov, worth_recalling

SILENT_LONG = REASONS.index("silent_long")
# Scores columns worked out when read, and the ones each is computed with.
ON_READ = ("r", "f", "m", "segment", "p_alive", "expected_orders", "value_fen", "worth_recalling")


class ScoreState:
    """One tenant's (or one simulated campus's) scoring sums, kept night after night.

    Holds a DailyFold: days come one at a time and in order (`add_day`; more of the last
    day may be added, as the simulator scores a morning before the day's activity). Users
    are indices 0..n_users-1; `resize` drops erased users and appends new ones.
    """

    def __init__(self, n_users: int) -> None:
        self.fold = DailyFold(n_users)

    @property
    def n_users(self) -> int:
        """How many users the state scores."""
        return self.fold.n_users

    @property
    def day(self) -> int | None:
        """The last day added (None before any)."""
        return self.fold.day

    @classmethod
    def from_columns(
        cls, events: EventColumns, orders: OrderColumns, n_users: int, as_of: int
    ) -> ScoreState:
        """A state whose last day is `as_of`, folded day by day from columns: production's
        first night (events of the look-back, orders all time, as services/scoring.py loads
        them), after which each night adds one day.

        Parameters
        ----------
        events, orders : the columns (core.columns); rows after `as_of` are ignored.
        n_users, as_of : how many users, and the last day to fold in.

        Returns
        -------
        ScoreState at `as_of`.
        """
        state = cls(n_users)
        ev_order = np.argsort(events.day, kind="stable")
        od_order = np.argsort(orders.day, kind="stable")
        ev = EventColumns(*(getattr(events, f.name)[ev_order] for f in fields(EventColumns)))
        od = OrderColumns(*(getattr(orders, f.name)[od_order] for f in fields(OrderColumns)))
        first = min(int(ev.day.min(initial=as_of)), int(od.day.min(initial=as_of)))
        ev_cut = np.searchsorted(ev.day, np.arange(first, as_of + 2))
        od_cut = np.searchsorted(od.day, np.arange(first, as_of + 2))
        for i, day in enumerate(range(first, as_of + 1)):
            e, o = slice(ev_cut[i], ev_cut[i + 1]), slice(od_cut[i], od_cut[i + 1])
            state.add_day(
                DayTotals.from_columns(
                    day,
                    EventColumns(*(getattr(ev, f.name)[e] for f in fields(EventColumns))),
                    OrderColumns(*(getattr(od, f.name)[o] for f in fields(OrderColumns))),
                )
            )
        return state

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The state as a JSON-able header and plain numeric arrays (DailyFold.to_arrays),
        for production to keep between nights without pickle.

        Returns
        -------
        (header, arrays) : `from_arrays` takes them back.
        """
        return self.fold.to_arrays()

    @classmethod
    def from_arrays(cls, header: dict, arrays: dict[str, np.ndarray]) -> ScoreState:
        """The state `to_arrays` gave: its next days and scores are the saved state's.

        Parameters
        ----------
        header, arrays : as `to_arrays` returns them.

        Returns
        -------
        ScoreState (a ValueError if the arrays do not fit the header).
        """
        state = object.__new__(cls)
        state.fold = DailyFold.from_arrays(header, arrays)
        return state

    def add_day(self, totals: DayTotals) -> None:
        """Fold in the next day's totals, or more of the last day's (core.rolling)."""
        self.fold.add_day(totals)

    def resize(self, keep: np.ndarray | None = None, add: int = 0) -> None:
        """Drop the users where `keep` is false (erased), renumbering the rest in order, and
        append `add` new users (DailyFold.resize)."""
        self.fold.resize(keep, add)

    def scores(
        self,
        calendar: TermCalendar,
        config: TierConfig,
        *,
        first_seen: np.ndarray | None = None,
        last_seen: np.ndarray | None = None,
        params: bgnbd.BgNbdParams | None = None,
        fit: bool = True,
    ) -> LazyScores:
        """The last day's scores: what `score_users` gives on that day's columns.

        Parameters
        ----------
        calendar, config : the tenant's breaks and tier thresholds.
        first_seen, last_seen : int64 day numbers per user, all time (as score_users).
        params, fit : a BG/NBD fit to reuse, or whether to fit one (as score_users).

        Returns
        -------
        LazyScores: features and activity are the fold's own arrays, read-only, valid until
        the next add_day or scores(); the ON_READ columns are worked out when read.
        """
        feats = self.fold.features(calendar, first_seen=first_seen, last_seen=last_seen, copy=False)
        act = self.fold.activity(calendar, copy=False)
        if params is None and fit:
            params = fit_for(feats)
        tier, reason = tiers_where_they_can_move(feats, act, config, params)
        return LazyScores.of(feats, act, config, params, tier, reason)


def tiers_where_they_can_move(
    feats: Features, act: Activity, config: TierConfig, params: bgnbd.BgNbdParams | None
) -> tuple[np.ndarray, np.ndarray]:
    """`assign_tiers` of every user, evaluated on the users not churned by silence alone.

    The first rule (silent ≥ churned_silent_days) wins whatever else holds, so those users
    are churned for reason silent_long without reading anything else; P(alive) is worked out
    only where no silence rule holds, the only rows on which the risk rule can decide.

    Parameters
    ----------
    feats, act : the night's features and activity.
    config : the tenant's thresholds.
    params : the BG/NBD fit (None: P(alive) unknown, NaN, as score_users).

    Returns
    -------
    (tier, reason) : int8 per user, as `assign_tiers` gives them.
    """
    silent = feats.term_days_since_visit
    tier = np.full(silent.shape, CHURNED, dtype=np.int8)
    reason = np.full(silent.shape, SILENT_LONG, dtype=np.int8)
    rows = np.flatnonzero(silent < config.churned_silent_days)
    if not rows.size:
        return tier, reason
    quiet = silent[rows]
    risk = np.full(rows.size, np.nan)
    if params is not None:
        # Rows silent for risk_silent_days or more are churn_risk by the second rule,
        # whatever their risk: any value serves there, NaN is kept.
        read = np.flatnonzero(quiet < config.risk_silent_days)
        alive = bgnbd.p_alive_rows(params, feats.frequency, feats.recency, feats.T, rows[read])
        risk[read] = 1.0 - alive
    tier[rows], reason[rows] = assign_tiers(
        quiet,
        feats.age_days[rows],
        feats.visit_days_30[rows],
        risk,
        act.warning[rows],
        config,
    )
    return tier, reason


class LazyScores(Scores):
    """Scores whose ON_READ columns are worked out when first read (then kept), over every
    user; `rows` gives a column for some users without working it out for the others."""

    @classmethod
    def of(
        cls,
        feats: Features,
        act: Activity,
        config: TierConfig,
        params: bgnbd.BgNbdParams | None,
        tier: np.ndarray,
        reason: np.ndarray,
    ) -> LazyScores:
        """Scores with features, activity, params and tiers given, the rest pending."""
        out = object.__new__(cls)
        out.__dict__.update(features=feats, activity=act, params=params, tier=tier, reason=reason)
        out.__dict__["_config"] = config
        return out

    def __getattr__(self, name: str):  # only called for what is not set yet
        if name not in ON_READ or "_config" not in self.__dict__:
            raise AttributeError(name)
        if name in ("r", "f", "m", "segment"):
            f = self.features
            r, fs, m = rfm_scores(f.days_since_visit, f.orders_total, f.spend_fen_total)
            self.__dict__.update(r=r, f=fs, m=m, segment=segments(r, fs, m))
        elif name in ("p_alive", "expected_orders"):
            self.__dict__["p_alive"], self.__dict__["expected_orders"] = self._alive_expected()
        elif name == "value_fen":
            f = self.features
            self.__dict__[name] = expected_value_fen(
                self.expected_orders, f.spend_fen_total, f.orders_total
            )
        else:
            self.__dict__[name] = self._worth(slice(None))
        return self.__dict__[name]

    def _alive_expected(self) -> tuple[np.ndarray, np.ndarray]:
        f, horizon = self.features, self._config.value_horizon_days
        if self.params is None:
            return np.full(f.T.size, np.nan), f.orders_90 * (horizon / 90.0)
        return bgnbd.alive_and_expected(self.params, horizon, f.frequency, f.recency, f.T)

    def _worth(self, rows) -> np.ndarray:
        f = self.features
        return worth_recalling(
            f.spend_fen_total[rows],
            f.invites_total[rows],
            f.content_total[rows],
            self._config.worth_ltv_fen,
        )

    def rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """`getattr(self, name)[rows]`, bit for bit, without working the column out for
        every user when it is still pending (P(alive), expected orders, value and
        worth-recalling are per-row given the population's tables; RFM is not, and is worked
        out whole).

        Parameters
        ----------
        name : a Scores column.
        rows : intp indices of the users wanted.

        Returns
        -------
        The column's values of `rows`.
        """
        rows = np.asarray(rows, dtype=np.intp)
        if name in self.__dict__ or name not in ("p_alive", "expected_orders", "value_fen"):
            if name == "worth_recalling" and name not in self.__dict__:
                return self._worth(rows)
            return getattr(self, name)[rows]
        if name == "p_alive":
            if self.params is None:
                return np.full(rows.size, np.nan)
            f = self.features
            return bgnbd.p_alive_rows(self.params, f.frequency, f.recency, f.T, rows)
        expected = self._expected_rows(rows)
        if name == "expected_orders":
            return expected
        f = self.features
        average = tenant_aov(f.spend_fen_total, f.orders_total)
        return expected_value_fen(
            expected, f.spend_fen_total[rows], f.orders_total[rows], average_fen=average
        )

    def _expected_rows(self, rows: np.ndarray) -> np.ndarray:
        if "expected_orders" in self.__dict__:
            return self.__dict__["expected_orders"][rows]
        f, horizon = self.features, self._config.value_horizon_days
        if self.params is None:
            return f.orders_90[rows] * (horizon / 90.0)
        return bgnbd.expected_rows(self.params, horizon, f.frequency, f.recency, f.T, rows)
