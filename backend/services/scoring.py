"""The daily score snapshot: columns from the database, scores from backend.core, rows back.

A few bulk queries per tenant (never one per user); the computing is backend.core's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import numpy as np
import peewee as pw
import yaml

from backend.core import seeds
from backend.core.bgnbd import BgNbdParams
from backend.core.calendar import (
    DEFAULT_CALENDAR,
    TermCalendar,
    calendar_from_spec,
    china_day,
    day_date,
    day_number,
    day_start_ms,
)
from backend.core.columns import EventColumns, OrderColumns
from backend.core.features import LOOKBACK_DAYS
from backend.core.rfm import SEGMENT_NAMES
from backend.core.scoring import Scores, refit_due
from backend.core.tiers import REASONS, TIERS, TierConfig
from backend.errors import ApiError
from backend.services import nightly_state
from backend.services.nightly_rows import event_columns, event_query, event_spans, users_until
from backend.store.db import database, execute_many
from backend.store.models import ModelFit, Order, ScoreSnapshot, Tenant


def load_calendar(settings: dict) -> TermCalendar:
    """The tenant's breaks: `calendar` in its settings names a file in seeds/ or lists them.

    Without a setting the campus calendar in seeds/ applies (Huiliu serves campuses);
    `"calendar": {"breaks": []}` turns breaks off.
    """
    spec = settings.get("calendar", DEFAULT_CALENDAR)
    try:
        if isinstance(spec, str):
            spec = seeds.calendar_spec(spec)
        return calendar_from_spec(spec)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"calendar {settings.get('calendar')!r} cannot be read: {exc}") from None


def tier_config(tenant: Tenant) -> TierConfig:
    """The tenant's tier thresholds: its `tiers` settings over the defaults. Scoring, the
    report's "lapsed at decision" and the dashboard's explanation all read them here."""
    return TierConfig.from_settings(json.loads(tenant.settings or "{}").get("tiers"))


def tenant_setup(tenant: Tenant) -> tuple[TermCalendar, TierConfig]:
    """The tenant's calendar and tier thresholds: the two settings every scoring reads."""
    return load_calendar(json.loads(tenant.settings or "{}")), tier_config(tenant)


@dataclass
class TenantColumns:
    """A tenant's log as the core's columns, users numbered 0..n-1 (the core never sees ids)."""

    user_ids: np.ndarray  # database ids; position = index in every column
    events: EventColumns  # within LOOKBACK_DAYS of the day scored
    orders: OrderColumns  # paid orders, all time
    first_seen: np.ndarray  # day of each user's sign-up or first event, whichever came first
    last_seen: np.ndarray  # day of each user's last event (their sign-up if none yet)


def _index_of(user_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(user_ids, ids)


def load_columns(tenant_id: int, as_of: int) -> TenantColumns:
    """Everything scoring needs, for users who existed by the end of `as_of`."""
    cutoff = day_start_ms(as_of + 1)
    user_ids, created_day = users_until(tenant_id, cutoff)

    since = day_start_ms(as_of - LOOKBACK_DAYS)
    events = event_columns(event_query(tenant_id, since, cutoff), user_ids)

    orows = list(
        Order.select(Order.user, Order.paid_ms, Order.amount_fen, Order.coupon.is_null(False))
        .where(
            (Order.tenant == tenant_id)
            & (Order.status == "paid")
            & Order.user.is_null(False)
            & (Order.paid_ms < cutoff)
        )
        .tuples()
    )
    ou = np.array([o[0] for o in orows], dtype=np.int64)
    okeep = np.isin(ou, user_ids)
    orders = OrderColumns(
        user=_index_of(user_ids, ou[okeep]),
        day=china_day(np.array([o[1] for o in orows], dtype=np.int64))[okeep],
        amount_fen=np.array([o[2] for o in orows], dtype=np.int64)[okeep],
        used_coupon=np.array([bool(o[3]) for o in orows], dtype=bool)[okeep],
    )

    # All-time first and last event per user (the events above cover only the lookback).
    first_seen = created_day.copy()
    last_seen = np.full(len(user_ids), -(10**6), dtype=np.int64)
    rows, first, last, _ = event_spans(tenant_id, cutoff, user_ids)
    first_seen[rows] = np.minimum(first_seen[rows], first)
    last_seen[rows] = last
    # A user who logged in but sent no event yet was last seen at that login.
    last_seen = np.where(last_seen < 0, created_day, last_seen)
    return TenantColumns(user_ids, events, orders, first_seen, last_seen)


# The smallest magnitude a `real` column takes: PostgreSQL refuses a float4 below it as out
# of range (a P(alive) of 1e-56 for a student gone for years), where SQLite keeps a double.
FLOAT4_TINY = float(np.finfo(np.float32).tiny)


def storable(x: np.ndarray) -> np.ndarray:
    """Probabilities too small for a `real` column stored as the 0 they are for every use.

    Parameters
    ----------
    x : float values (NaN kept).

    Returns
    -------
    `x` with every value of magnitude below FLOAT4_TINY set to 0.0.
    """
    return np.where(np.abs(x) < FLOAT4_TINY, 0.0, x)


def _snapshot_columns(tenant_id: int, day: int, user_ids: np.ndarray, s: Scores) -> dict:
    """The day's snapshot as one list per ScoreSnapshot field, keyed by the field's name: each
    value is written beside the field it fills, so adding a field cannot shift another.

    Parameters
    ----------
    user_ids : the users' database ids, in the scores' order.
    s : the scores of those users (core.scoring.score_users or the nightly state's).

    Returns
    -------
    Field name -> one value per user, ready for the database (text names, rounded floats).
    """
    f = s.features
    n = len(user_ids)
    return {
        "tenant": [tenant_id] * n,
        "day": [day] * n,
        "user": user_ids.tolist(),
        "tier": [TIERS[t] for t in s.tier],
        "reason": [REASONS[r] for r in s.reason],
        "activity_index": np.round(s.activity.index, 2).tolist(),
        "baseline": np.round(s.activity.baseline, 2).tolist(),
        "warning": s.activity.warning.tolist(),
        "r": s.r.tolist(),
        "f": s.f.tolist(),
        "m": s.m.tolist(),
        "segment": [SEGMENT_NAMES[g] for g in s.segment],
        "p_alive": [None if np.isnan(p) else float(p) for p in storable(s.p_alive)],
        "expected_orders": np.round(s.expected_orders, 4).tolist(),
        "value_fen": s.value_fen.tolist(),
        "worth_recalling": s.worth_recalling.tolist(),
        "days_since_visit": f.days_since_visit.tolist(),
        "term_days_since_visit": f.term_days_since_visit.tolist(),
        "days_since_order": f.days_since_order.tolist(),
        "age_days": f.age_days.tolist(),
        "visit_days_30": f.visit_days_30.tolist(),
        "orders_total": f.orders_total.tolist(),
        "spend_fen_total": f.spend_fen_total.tolist(),
        "invites_total": f.invites_total.tolist(),
        "content_total": f.content_total.tolist(),
        "usual_hour": f.usual_hour.tolist(),
    }


def _insert_rows(columns: dict[str, list]) -> tuple[list[pw.Field], list[tuple]]:
    """The insert's fields, taken from the columns' names, and its rows. Every field of the
    model but its id must be there: a field added to ScoreSnapshot and not filled fails here,
    not as a NULL in production."""
    wanted = [name for name in ScoreSnapshot._meta.sorted_field_names if name != "id"]
    if sorted(columns) != sorted(wanted):
        raise ValueError(f"snapshot columns {sorted(columns)} are not ScoreSnapshot's {wanted}")
    fields = [ScoreSnapshot._meta.fields[name] for name in columns]
    return fields, list(zip(*columns.values(), strict=True))


def _insert_snapshot(fields: list[pw.Field], rows: list[tuple]) -> None:
    """The snapshot's rows in one INSERT run by the driver's own batching
    (store.db.execute_many), in the caller's transaction: peewee building the SQL of a
    large insert_many was most of a night once the scores came from the kept state. The
    values are plain Python (ints, floats, str, bool, None: `_snapshot_columns`), which both
    drivers store as peewee would."""
    names = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join("?" for _ in fields)
    table = ScoreSnapshot._meta.table_name
    execute_many(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)


def score_tenant(tenant: Tenant, day: int) -> dict:
    """Compute and store the tenant's snapshot for `day`, replacing any earlier one."""
    calendar, config = tenant_setup(tenant)
    # The scores score_users gives on load_columns(tenant.id, day), from the kept nightly
    # state when it is exactly the database's (services/nightly_state.py), else rebuilt.
    night = nightly_state.night_of(tenant, day, nightly_state.settings_key(calendar, config))
    n = len(night.user_ids)
    last = _last_fit(tenant.id, day - 1)
    reused = None if last is None or refit_due(last.day, day) else _params(last)
    scores = night.state.scores(
        calendar,
        config,
        first_seen=night.first_seen,
        last_seen=night.last_seen,
        params=reused,
    )
    columns = _snapshot_columns(tenant.id, day, night.user_ids, scores)
    fields, rows = _insert_rows(columns) if n else ([], [])
    with database.atomic():
        ScoreSnapshot.delete().where(
            (ScoreSnapshot.tenant == tenant.id) & (ScoreSnapshot.day == day)
        ).execute()
        ModelFit.delete().where((ModelFit.tenant == tenant.id) & (ModelFit.day == day)).execute()
        _insert_snapshot(fields, rows)
        if scores.params is not None and reused is None:  # a fit is stored on the day it is made
            p = scores.params
            ModelFit.create(
                tenant=tenant.id,
                day=day,
                r=p.r,
                alpha=p.alpha,
                a=p.a,
                b=p.b,
                loglik=p.loglik,
                n=p.n,
            )
    return {
        "tenant": tenant.appid,
        "date": day_date(day).isoformat(),
        "users": n,
        "tiers": {t: int((scores.tier == i).sum()) for i, t in enumerate(TIERS)},
        "model": scores.params.as_dict() if scores.params else None,
        "model_fitted_on": day_date(day if reused is None else last.day).isoformat()
        if scores.params
        else None,
    }


def _last_fit(tenant_id: int, day: int) -> ModelFit | None:
    """The tenant's latest BG/NBD fit made on or before `day`."""
    return (
        ModelFit.select()
        .where((ModelFit.tenant == tenant_id) & (ModelFit.day <= day))
        .order_by(ModelFit.day.desc())
        .first()
    )


def _params(fit: ModelFit) -> BgNbdParams:
    return BgNbdParams(r=fit.r, alpha=fit.alpha, a=fit.a, b=fit.b, loglik=fit.loglik, n=fit.n)


def parse_day(text: str | None, today: int) -> int:
    """A YYYY-MM-DD China date as a day number; today by default; never in the future."""
    if text is None:
        return today
    try:
        day = day_number(date.fromisoformat(text))
    except ValueError:
        raise ApiError(400, "invalid_date", f"{text!r} is not a YYYY-MM-DD date") from None
    if day > today:
        raise ApiError(400, "date_in_future", f"{text} has not happened yet")
    return day


def latest_day(tenant_id: int) -> int | None:
    """The last day the tenant was scored (None: never): what "today's scores" means."""
    return (
        ScoreSnapshot.select(pw.fn.MAX(ScoreSnapshot.day))
        .where(ScoreSnapshot.tenant == tenant_id)
        .scalar()
    )


def summary(tenant_id: int, day: int | None) -> dict:
    """Tier and segment sizes on a day (the latest scored day by default)."""
    day = latest_day(tenant_id) if day is None else day
    if day is None:
        raise ApiError(404, "not_scored", "no scores yet: run `python app.py score`")
    base = (ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day == day)

    def sizes(column, names):
        counts = dict(
            ScoreSnapshot.select(column, pw.fn.COUNT(ScoreSnapshot.id))
            .where(base)
            .group_by(column)
            .tuples()
        )
        return {name: int(counts.get(name, 0)) for name in names}

    tiers = sizes(ScoreSnapshot.tier, TIERS)
    if not sum(tiers.values()):
        raise ApiError(404, "not_scored", f"no scores on {day_date(day).isoformat()}")
    fit = _last_fit(tenant_id, day)  # the fit that day's scores used (refits are weekly)
    if fit is not None and refit_due(fit.day, day):
        fit = None
    return {
        "date": day_date(day).isoformat(),
        "users": sum(tiers.values()),
        "tiers": tiers,
        "segments": sizes(ScoreSnapshot.segment, SEGMENT_NAMES),
        "warnings": ScoreSnapshot.select().where(base & ScoreSnapshot.warning).count(),
        "worth_recalling": ScoreSnapshot.select()
        .where(base & ScoreSnapshot.worth_recalling)
        .count(),
        "model": None
        if fit is None
        else {
            "r": fit.r,
            "alpha": fit.alpha,
            "a": fit.a,
            "b": fit.b,
            "loglik": fit.loglik,
            "n": fit.n,
            "fitted_on": day_date(fit.day).isoformat(),
        },
    }


def score_row(tenant_id: int, user_id: int, day: int | None) -> ScoreSnapshot:
    """The user's snapshot on `day` (None: the latest), which the web layer phrases for its
    reader; ApiError 404 `not_scored` when there is none."""
    query = ScoreSnapshot.select().where(
        (ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.user == user_id)
    )
    if day is not None:
        query = query.where(ScoreSnapshot.day == day)
    row = query.order_by(ScoreSnapshot.day.desc()).first()
    if row is None:
        raise ApiError(404, "not_scored", "this user has no scores for that day")
    return row
