"""Subscribe-message allowances: each `accept` permits exactly one later message.

Bounded, because the client's word is all we have (a grant cannot be verified with WeChat):
a prompt names at most MAX_TEMPLATES_PER_PROMPT templates (wx.requestSubscribeMessage asks for
1-3 at a time), and accepts stop adding at MAX_ALLOWANCE per template. WeChat documents one
send per accept but not whether accepts accumulate (WECHAT_RULES.md: "unconfirmed"), so a
small ceiling is kept: a client posting grants in a loop, with fresh request ids, cannot
inflate its allowance past it, and at most that many sends can fail with 43101 before WeChat's
answer zeroes it.
"""

from __future__ import annotations

import json

from peewee import Case

from backend.core.policy.guards import MAX_SUBSCRIBE_ALLOWANCE
from backend.errors import ApiError
from backend.store.db import database
from backend.store.models import SubscriptionAllowance, SubscriptionGrant

RESULTS = ("accept", "reject", "ban", "filter")
MAX_TEMPLATES_PER_PROMPT = 3  # wx.requestSubscribeMessage's tmplIds: 1-3 per call
# one-time sends held per user and template; accepts beyond it are ignored
MAX_ALLOWANCE = MAX_SUBSCRIBE_ALLOWANCE

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
            "maxProperties": MAX_TEMPLATES_PER_PROMPT + 1,  # and errMsg
            "propertyNames": {"minLength": 1, "maxLength": 128},
            "properties": {"errMsg": {"type": "string"}},
            "additionalProperties": {"enum": list(RESULTS)},
        },
    },
}


def record(tenant_id: int, user_id: int, body: dict, now_ms: int) -> tuple[dict, bool]:
    """Apply one prompt's answers; returns (template -> remaining allowance, was_duplicate).

    accept adds one allowance (up to MAX_ALLOWANCE); ban (the user switched the template off)
    zeroes it; reject and filter leave earlier allowances alone: a refusal now does not take
    back an earlier yes.
    """
    results = {k: v for k, v in body["results"].items() if k != "errMsg"}
    if len(results) > MAX_TEMPLATES_PER_PROMPT:
        raise ApiError(
            400,
            "invalid_request",
            f"results: at most {MAX_TEMPLATES_PER_PROMPT} template ids "
            "(one wx.requestSubscribeMessage prompt)",
        )
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
        remaining = SubscriptionAllowance.remaining
        changes["remaining"] = Case(None, [(remaining < MAX_ALLOWANCE, remaining + 1)], remaining)
    elif outcome == "ban":
        changes["remaining"] = 0
    SubscriptionAllowance.update(**changes).where(
        (SubscriptionAllowance.user == user_id) & (SubscriptionAllowance.template_id == template_id)
    ).execute()


def allowances(user_id: int) -> dict[str, int]:
    """Subscribe messages the user still allows, per template id: what the subscribe channel
    may spend (each accepted prompt adds one, each send takes one)."""
    rows = SubscriptionAllowance.select().where(SubscriptionAllowance.user == user_id)
    return {a.template_id: a.remaining for a in rows}
