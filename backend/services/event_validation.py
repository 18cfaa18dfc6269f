"""What a valid event is: vocabulary, per-type props, timestamps and clock-skew correction.

Pure functions (no database), so the mini-program route and the historical import apply the
very same rules and differ only in the time window they accept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from backend.core.clock import CHINA_TZ, to_ms
from backend.core.validation import first_error, unstorable_value

MAX_PROPS_BYTES = 2048
MAX_FUTURE_MS = 10 * 60 * 1000  # after skew correction, later than now + 10 min is refused
MP_MAX_AGE_MS = 7 * 24 * 3600 * 1000  # phones queue offline for days, not weeks
IMPORT_EARLIEST_MS = to_ms(datetime(2015, 1, 1, tzinfo=UTC))  # mini-programs did not exist
MAX_AMOUNT_FEN = 100_000_000  # one million yuan: anything above is a unit mistake

# Event type -> what it means. `app_open` is the "visit" every recency measure counts.
VOCABULARY: dict[str, str] = {
    "app_open": "the mini-program was opened or brought to the foreground (a visit)",
    "page_view": "a page was shown; props.page names it",
    "session_end": "the user left; props.duration_s is the session length in seconds",
    "search": "a search; props.query",
    "add_to_cart": "an item was added to the cart",
    "cart_abandoned": "the user left with items in the cart",
    "checkout_start": "the user began paying",
    "order_paid": "an order was paid: props.order_id, props.amount_fen, props.merchant",
    "payment_failed": "a payment did not go through",
    "order_refunded": "an order was refunded: props.order_id",
    "share": "the user shared a page or item",
    "invite": "the user invited a friend",
    "review": "the user wrote a review",
    "like": "the user liked content",
    "comment": "the user commented",
    "message_open": "the user opened the app from a message; props.touch_id if known",
    "coupon_view": "the user looked at their coupons",
}
CUSTOM_PREFIX = "custom:"

_TS = {
    "oneOf": [
        {"type": "integer", "description": "epoch milliseconds, UTC"},
        {"type": "string", "description": "ISO-8601; without an offset it means China time"},
    ]
}

EVENT_FIELDS = {
    "id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": "^[\\x21-\\x7e]+$",
        "description": "client-generated id, unique per user: retries with the same id are "
        "counted as duplicates",
    },
    "type": {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "description": "one of the vocabulary or custom:<name>",
    },
    "ts": _TS,
    "props": {"type": "object", "description": f"at most {MAX_PROPS_BYTES} bytes as JSON"},
}
MP_EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "ts"],
    "additionalProperties": False,
    "properties": EVENT_FIELDS,
}
IMPORT_EVENT_SCHEMA = {
    "type": "object",
    "required": ["user", "id", "type", "ts"],
    "additionalProperties": False,
    "properties": {
        "user": {"type": "string", "minLength": 1, "maxLength": 128, "description": "openid"},
        **EVENT_FIELDS,
    },
}

_ORDER_ID = {"type": "string", "minLength": 1, "maxLength": 64}
PROPS_SCHEMAS: dict[str, dict] = {
    "order_paid": {
        "type": "object",
        "required": ["order_id", "amount_fen"],
        "properties": {
            "order_id": _ORDER_ID,
            "amount_fen": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT_FEN},
            "merchant": {"type": "string", "minLength": 1, "maxLength": 64},
        },
    },
    "order_refunded": {
        "type": "object",
        "required": ["order_id"],
        "properties": {"order_id": _ORDER_ID},
    },
    "session_end": {
        "type": "object",
        "required": ["duration_s"],
        "properties": {"duration_s": {"type": "number", "minimum": 0, "maximum": 86400}},
    },
}


class InvalidEvent(ValueError):
    """One event refused; its message (`field: problem`) goes back in the batch's `rejected`
    list, and the rest of the batch is still taken."""


@dataclass(frozen=True)
class CleanEvent:
    """An event that passed every check, ready to store: `client_id` the sender's id for it
    (duplicates are dropped by it), `ts_ms` UTC epoch ms after clock-skew correction,
    `props_json` the props as stored (compact, sorted keys), `openid` the user it names when
    the sender is a server rather than the user's own mini-program."""

    client_id: str
    type: str
    ts_ms: int
    props: dict
    props_json: str
    openid: str | None = None


def parse_ts(value: int | str, field: str = "ts") -> int:
    """Epoch ms from epoch ms or ISO-8601 (naive means China time, as phones there show it)."""
    if isinstance(value, bool):
        raise InvalidEvent(f"{field}: must be epoch milliseconds or an ISO-8601 string")
    if isinstance(value, int):
        if value < 10**11:
            raise InvalidEvent(f"{field}: {value} looks like seconds; send epoch milliseconds")
        if value > 10**14:
            raise InvalidEvent(f"{field}: {value} is not a plausible epoch-millisecond time")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent(f"{field}: {value!r} is not an ISO-8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=CHINA_TZ)
        try:
            return to_ms(when)
        except (OverflowError, ValueError, OSError):
            raise InvalidEvent(f"{field}: {value!r} is out of range") from None
    raise InvalidEvent(f"{field}: must be epoch milliseconds or an ISO-8601 string")


def check_type(kind: str) -> None:
    """Refuse an event type outside the documented vocabulary and the `custom:<name>` space,
    so a typo is a rejected event rather than a silently ignored one."""
    if kind in VOCABULARY:
        return
    if kind.startswith(CUSTOM_PREFIX) and len(kind) > len(CUSTOM_PREFIX):
        return
    raise InvalidEvent(f"type: {kind!r} is not in the vocabulary (see docs) nor custom:<name>")


_PRINTABLE_ID = re.compile(r"[\x21-\x7e]{1,64}")


def _plainly_valid(raw: object, schema: dict) -> bool:
    """The common case, checked by hand: True only if `schema` would surely accept `raw`.

    jsonschema costs ~40 µs an event, a third of a batch's server time; it still runs, to word
    the message, whenever this quick check is not sure.
    """
    if not isinstance(raw, dict):
        return False
    props = schema["properties"]
    if not set(schema["required"]) <= raw.keys() or not raw.keys() <= props.keys():
        return False
    kind, ts, ident = raw["type"], raw["ts"], raw["id"]
    if not (isinstance(ident, str) and _PRINTABLE_ID.fullmatch(ident)):
        return False
    if not (isinstance(kind, str) and 1 <= len(kind) <= 64):
        return False
    if not (isinstance(ts, str) or (isinstance(ts, int) and not isinstance(ts, bool))):
        return False
    if "props" in raw and not isinstance(raw["props"], dict):
        return False
    user = raw.get("user")
    return "user" not in props or (isinstance(user, str) and 1 <= len(user) <= 128)


def clean_event(
    raw: object,
    *,
    schema: dict,
    now_ms: int,
    skew_ms: int,
    earliest_ms: int,
) -> CleanEvent:
    """Validate one event and return it with its skew-corrected time, or raise InvalidEvent."""
    problem = None if _plainly_valid(raw, schema) else first_error(schema, raw)
    if problem:
        # An error at the event's root reads better named "event" than "body".
        raise InvalidEvent(problem.replace("body: ", "event: ", 1))
    assert isinstance(raw, dict)
    # Before anything reads a string: one that cannot be stored (an unpaired surrogate in a
    # custom type, U+0000 in props) must reject this event here, not fail the batch's insert.
    unstorable = unstorable_value(raw)
    if unstorable:
        raise InvalidEvent(unstorable)
    check_type(raw["type"])
    props = raw.get("props", {})
    props_json = json.dumps(props, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if len(props_json.encode()) > MAX_PROPS_BYTES:
        raise InvalidEvent(f"props: larger than {MAX_PROPS_BYTES} bytes as JSON")
    props_schema = PROPS_SCHEMAS.get(raw["type"])
    if props_schema:
        problem = first_error(props_schema, props, root="props")
        if problem:
            raise InvalidEvent(problem)
    ts_ms = parse_ts(raw["ts"]) + skew_ms
    if ts_ms > now_ms + MAX_FUTURE_MS:
        raise InvalidEvent("ts: more than 10 minutes in the future (after clock-skew correction)")
    if ts_ms < earliest_ms:
        raise InvalidEvent("ts: older than this endpoint accepts (see docs for the limit)")
    return CleanEvent(
        client_id=raw["id"],
        type=raw["type"],
        ts_ms=ts_ms,
        props=props,
        props_json=props_json,
        openid=raw.get("user"),
    )


def skew_from_sent_at(sent_at: int | str | None, now_ms: int) -> int:
    """How far the phone's clock is behind the server's; added to every event time.

    As in Segment and PostHog: the batch carries the phone's clock at sending (`sent_at`), the
    server knows its own receive time, and the difference is the phone's skew (network delay is
    small against the minutes or hours a wrong phone clock is off by).
    """
    if sent_at is None:
        return 0
    return now_ms - parse_ts(sent_at, field="sent_at")
