"""The in-app "welcome back" card: an in_app touch waits here until the user opens the app."""

from __future__ import annotations

from backend.core.calendar import MS_PER_DAY
from backend.core.policy import PolicyError
from backend.services import policies
from backend.services.delivery import message_context
from backend.services.messages import MessageDefect, render
from backend.store.db import write_transaction
from backend.store.models import Policy as PolicyRow
from backend.store.models import Tenant, Touch

CARD_TTL_MS = 7 * MS_PER_DAY  # a card older than a week is stale news

CARD_SCHEMA = {
    "type": "object",
    "properties": {
        "cards": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "title": {"type": ["string", "null"]},
                    "text": {"type": "string"},
                    "page": {"type": ["string", "null"]},
                    "coupon_id": {"type": ["integer", "null"]},
                },
            },
        }
    },
}


def take_cards(tenant: Tenant, user_id: int, now_ms: int) -> list[dict]:
    """Cards delivered to the user and not yet shown; showing them marks them opened."""
    rows = list(
        Touch.select(Touch, PolicyRow)
        .join(PolicyRow)
        .where(
            (Touch.user == user_id)
            & (Touch.channel == "in_app")
            & (Touch.status == "sent")
            & Touch.opened_ms.is_null()
            & (Touch.sent_ms > now_ms - CARD_TTL_MS)
        )
        .order_by(Touch.sent_ms.desc())
    )
    cards = []
    for t in rows:
        try:
            message = policies.loaded(t.policy).messages[t.message]
        except PolicyError:  # its policy's stored source cannot be read: no card, no 500
            continue
        try:
            shown = render(message, "in_app", message_context(tenant, t, t.coupon))
        except MessageDefect:
            continue
        cards.append(
            {
                "id": t.id,
                "title": shown.title,
                "text": shown.text,
                "page": shown.page,
                "coupon_id": t.coupon_id,
            }
        )
    if cards:  # only cards actually shown are opened: a skipped one must not inflate the funnel
        with write_transaction():
            Touch.update(opened_ms=now_ms).where(Touch.id.in_([c["id"] for c in cards])).execute()
    return cards
