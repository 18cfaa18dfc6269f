"""Subscribe-message allowances: each `accept` permits exactly one later message."""

from __future__ import annotations

import json

from backend.store.db import database
from backend.store.models import SubscriptionAllowance, SubscriptionGrant

RESULTS = ("accept", "reject", "ban", "filter")

SUBSCRIPTION_SCHEMA = {
    "type": "object",
    "required": ["results"],
    "additionalProperties": False,
    "properties": {
        "id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "optional idempotency key: the same id recorded twice counts once",
        },
        "results": {
            "type": "object",
            "description": "the object wx.requestSubscribeMessage resolved with: template id -> "
            "accept | reject | ban | filter (its errMsg key is ignored)",
            "minProperties": 1,
            "maxProperties": 10,
            "propertyNames": {"minLength": 1, "maxLength": 128},
            "properties": {"errMsg": {"type": "string"}},
            "additionalProperties": {"enum": list(RESULTS)},
        },
    },
}


def record(tenant_id: int, user_id: int, body: dict, now_ms: int) -> tuple[dict, bool]:
    """Apply one prompt's answers; returns (template -> remaining allowance, was_duplicate).

    accept adds one allowance; ban (the user switched the template off) zeroes it; reject and
    filter leave earlier allowances alone: a refusal now does not take back an earlier yes.
    """
    results = {k: v for k, v in body["results"].items() if k != "errMsg"}
    with database.atomic():
        duplicate = False
        if "id" in body:
            inserted = (
                SubscriptionGrant.insert(
                    tenant=tenant_id,
                    user=user_id,
                    request_id=body["id"],
                    results=json.dumps(results, sort_keys=True),
                    created_ms=now_ms,
                )
                .on_conflict_ignore()
                .as_rowcount()
                .execute()
            )
            duplicate = inserted == 0
        if not duplicate:
            for template_id, outcome in results.items():
                _apply(tenant_id, user_id, template_id, outcome, now_ms)
    return allowances(user_id), duplicate


def _apply(tenant_id: int, user_id: int, template_id: str, outcome: str, now_ms: int) -> None:
    SubscriptionAllowance.insert(
        tenant=tenant_id,
        user=user_id,
        template_id=template_id,
        remaining=0,
        last_result=outcome,
        updated_ms=now_ms,
    ).on_conflict_ignore().as_rowcount().execute()
    changes: dict = {"last_result": outcome, "updated_ms": now_ms}
    if outcome == "accept":
        changes["remaining"] = SubscriptionAllowance.remaining + 1
    elif outcome == "ban":
        changes["remaining"] = 0
    SubscriptionAllowance.update(**changes).where(
        (SubscriptionAllowance.user == user_id) & (SubscriptionAllowance.template_id == template_id)
    ).execute()


def allowances(user_id: int) -> dict[str, int]:
    rows = SubscriptionAllowance.select().where(SubscriptionAllowance.user == user_id)
    return {a.template_id: a.remaining for a in rows}
