"""Storing validated event batches: one transaction, idempotent on (user, client id)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backend.core.policy.spec import TRIGGER_EVENTS
from backend.core.validation import first_error, unstorable_value
from backend.errors import ApiError
from backend.services import telemetry
from backend.services.event_validation import (
    CleanEvent,
    InvalidEvent,
    clean_event,
    skew_from_sent_at,
)
from backend.store.db import write_transaction
from backend.store.models import Coupon, Event, Merchant, Order, User

INSERT_CHUNK = 500


TRIGGER_MAX_AGE_MS = 60 * 60 * 1000


@dataclass
class BatchResult:
    """What became of one batch: events stored, duplicates of events already stored, and the
    rejected ones with why."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)
    # Trigger-policy events just received (type -> user ids): decided right away.
    triggers: dict[str, set[int]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The batch's answer to its sender (the triggers stay inside the backend)."""
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


def batch_schemas(item_schema: dict, max_batch: int) -> tuple[dict, dict]:
    """(documented schema, envelope schema) of a batch request.

    Items are validated one by one so a bad event rejects only itself; the envelope schema is
    the documented one with its items left open.
    """
    properties = {
        "events": {"type": "array", "items": item_schema, "maxItems": max_batch},
        "sent_at": {
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "description": "the phone's clock when sending; event times are shifted by "
            "(server time - sent_at) to undo the phone's clock skew",
        },
    }
    doc = {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": properties,
    }
    envelope = {**doc, "properties": {**properties, "events": {"type": "array"}}}
    return doc, envelope


def ingest(
    body: dict,
    *,
    envelope: dict,
    item_schema: dict,
    max_batch: int,
    earliest_ms: int,
    tenant_id: int,
    now_ms: int,
    user_id: int | None = None,
) -> BatchResult:
    """Validate and store one batch request (the mini-program's or a historical import)."""
    problem = first_error(envelope, body)
    if not problem:  # the events are checked one by one below, each rejected alone
        problem = unstorable_value({k: v for k, v in body.items() if k != "events"})
    if problem:
        raise ApiError(400, "invalid_request", problem)
    if len(body["events"]) > max_batch:
        raise ApiError(
            400,
            "batch_too_large",
            f"{len(body['events'])} events in one batch; the limit is {max_batch}",
        )
    try:
        skew = skew_from_sent_at(body.get("sent_at"), now_ms)
    except InvalidEvent as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    good, rejected = validate_batch(
        body["events"], schema=item_schema, now_ms=now_ms, skew_ms=skew, earliest_ms=earliest_ms
    )
    return store_batch(tenant_id, good, rejected, now_ms=now_ms, user_id=user_id)


def validate_batch(
    raw_events: list, *, schema: dict, now_ms: int, skew_ms: int, earliest_ms: int
) -> tuple[list[tuple[int, CleanEvent]], list[dict]]:
    """Split a batch into (index, clean event) pairs and rejections naming index and reason."""
    good: list[tuple[int, CleanEvent]] = []
    rejected: list[dict] = []
    for index, raw in enumerate(raw_events):
        try:
            good.append(
                (
                    index,
                    clean_event(
                        raw, schema=schema, now_ms=now_ms, skew_ms=skew_ms, earliest_ms=earliest_ms
                    ),
                )
            )
        except InvalidEvent as exc:
            rejected.append({"index": index, "error": str(exc)})
    return good, rejected


def _known_merchants(tenant_id: int, events: Iterable[CleanEvent]) -> dict[str, int]:
    codes = {
        e.props["merchant"] for e in events if e.type == "order_paid" and "merchant" in e.props
    }
    if not codes:
        return {}
    rows = Merchant.select(Merchant.id, Merchant.code).where(
        (Merchant.tenant == tenant_id) & Merchant.code.in_(list(codes))
    )
    return {m.code: m.id for m in rows}


def _ensure_users(tenant_id: int, openids: set[str], now_ms: int) -> dict[str, int]:
    """openid -> user id, creating unknown users (historical import) without races."""
    ids: dict[str, int] = {}
    wanted = sorted(openids)
    for start in range(0, len(wanted), INSERT_CHUNK):
        chunk = wanted[start : start + INSERT_CHUNK]
        User.insert_many(
            [{"tenant": tenant_id, "openid": o, "created_ms": now_ms} for o in chunk]
        ).on_conflict_ignore().as_rowcount().execute()
        rows = User.select(User.id, User.openid).where(
            (User.tenant == tenant_id) & User.openid.in_(chunk)
        )
        ids.update({u.openid: u.id for u in rows})
    return ids


def store_batch(
    tenant_id: int,
    good: list[tuple[int, CleanEvent]],
    rejected: list[dict],
    *,
    now_ms: int,
    user_id: int | None = None,
) -> BatchResult:
    """Write the valid events, their orders and refunds, and users' last-seen, atomically.

    `user_id` is the logged-in user for /mp/v1; for imports each event names its openid.
    Duplicates (an id already stored for that user, or repeated inside the batch) are counted,
    not rejected, so a phone retrying a batch it never got an answer for is harmless.
    """
    result = BatchResult(rejected=list(rejected))
    merchants = _known_merchants(tenant_id, (e for _, e in good))
    kept: list[tuple[int, CleanEvent]] = []
    for index, ev in good:
        code = ev.props.get("merchant") if ev.type == "order_paid" else None
        if code is not None and code not in merchants:
            result.rejected.append({"index": index, "error": f"props.merchant: unknown {code!r}"})
        else:
            kept.append((index, ev))
    result.rejected.sort(key=lambda r: r["index"])

    with write_transaction():
        users = None
        if user_id is None:
            users = _ensure_users(tenant_id, {e.openid for _, e in kept if e.openid}, now_ms)
        rows = _unique_rows(kept, user_id, users)
        inserted = 0
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            inserted += (
                Event.insert_many(
                    [
                        (tenant_id, uid, ev.client_id, ev.type, ev.ts_ms, now_ms, ev.props_json)
                        for uid, ev in chunk
                    ],
                    fields=_EVENT_FIELDS,
                )
                .on_conflict_ignore()
                .as_rowcount()
                .execute()
            )
        _store_orders(tenant_id, rows, merchants)
        _touch_seen(rows)
    result.accepted = inserted
    result.duplicates = len(kept) - inserted
    source = "mp" if user_id is not None else "import"  # /mp/v1 names its user, imports do not
    telemetry.count_events(source, result.accepted, len(result.rejected), result.duplicates)
    for uid, ev in rows:
        # Only fresh events trigger: a phone's week-old offline queue is history, not a cue.
        if ev.type in TRIGGER_EVENTS and ev.ts_ms >= now_ms - TRIGGER_MAX_AGE_MS:
            result.triggers.setdefault(ev.type, set()).add(uid)
    return result


_EVENT_FIELDS = [
    Event.tenant,
    Event.user,
    Event.client_id,
    Event.type,
    Event.ts_ms,
    Event.received_ms,
    Event.props,
]


def _unique_rows(
    kept: list[tuple[int, CleanEvent]], user_id: int | None, users: dict[str, int] | None
) -> list[tuple[int, CleanEvent]]:
    """(user id, event) pairs with repeats of the same id for the same user dropped."""
    seen: set[tuple[int, str]] = set()
    rows = []
    for _, ev in kept:
        uid = user_id if user_id is not None else users[ev.openid]
        if (uid, ev.client_id) not in seen:
            seen.add((uid, ev.client_id))
            rows.append((uid, ev))
    return rows


def _store_orders(tenant_id: int, rows: list[tuple[int, CleanEvent]], merchants: dict) -> None:
    paid = [
        {
            "tenant": tenant_id,
            "user": uid,
            "order_ref": ev.props["order_id"],
            "merchant": merchants.get(ev.props.get("merchant")),
            "amount_fen": ev.props["amount_fen"],
            "paid_ms": ev.ts_ms,
        }
        for uid, ev in rows
        if ev.type == "order_paid"
    ]
    for start in range(0, len(paid), INSERT_CHUNK):
        # First event for an order id wins; a retried or repeated order_paid is ignored.
        Order.insert_many(
            paid[start : start + INSERT_CHUNK]
        ).on_conflict_ignore().as_rowcount().execute()
    if paid:
        _link_redeemed_coupons(tenant_id, [p["order_ref"] for p in paid])
    refunded = [ev.props["order_id"] for _, ev in rows if ev.type == "order_refunded"]
    if refunded:
        Order.update(status="refunded").where(
            (Order.tenant == tenant_id) & Order.order_ref.in_(refunded)
        ).execute()


def _link_redeemed_coupons(tenant_id: int, order_refs: list[str]) -> None:
    """A coupon redeemed before its order's event arrived is linked once the order lands."""
    coupons = Coupon.select(Coupon.id, Coupon.order_ref).where(
        (Coupon.tenant == tenant_id) & Coupon.order_ref.in_(order_refs)
    )
    for c in coupons:
        Order.update(coupon=c.id).where(
            (Order.tenant == tenant_id) & (Order.order_ref == c.order_ref) & Order.coupon.is_null()
        ).execute()


def _touch_seen(rows: list[tuple[int, CleanEvent]]) -> None:
    """Widen each user's known span: last_seen_ms up, created_ms (first seen) down.

    A historical import or a phone's offline queue can carry events older than the user row,
    and scoring a past day must still find the user.
    """
    span: dict[int, tuple[int, int]] = {}
    for uid, ev in rows:
        lo, hi = span.get(uid, (ev.ts_ms, ev.ts_ms))
        span[uid] = (min(lo, ev.ts_ms), max(hi, ev.ts_ms))
    for uid, (lo, hi) in span.items():
        User.update(last_seen_ms=hi).where(
            (User.id == uid) & (User.last_seen_ms.is_null() | (User.last_seen_ms < hi))
        ).execute()
        User.update(created_ms=lo).where((User.id == uid) & (User.created_ms > lo)).execute()
