"""A tenant's recall policies: stored as submitted, parsed by core.policy on every use."""

from __future__ import annotations

import json
import logging

import peewee

from backend.core import seeds
from backend.core.policy import Policy, PolicyError, parse_policy
from backend.errors import ApiError
from backend.store.db import write_transaction
from backend.store.models import CouponTemplate
from backend.store.models import Policy as PolicyRow

log = logging.getLogger(__name__)


def preset_source(name: str) -> str:
    """The YAML text of a shipped preset, for a merchant to start from; 404 `unknown_preset`
    naming the presets there are."""
    path = seeds.preset_path(name)
    if name not in seeds.preset_names():
        raise ApiError(
            404, "unknown_preset", f"no preset policy {name!r}; have {seeds.preset_names()}"
        )
    return path.read_text(encoding="utf-8")


def parse(source: str | dict) -> Policy:
    """The policy, or a 400: `invalid_policy`, or the document limit it broke (e.g.
    `too_many_aliases`), naming the field and line."""
    try:
        return parse_policy(source)
    except PolicyError as exc:
        extra = {"field": exc.field}
        if exc.line is not None:
            extra["line"] = exc.line
        raise ApiError(400, exc.code, str(exc), **extra) from None


def check_coupons(tenant_id: int, policy: Policy) -> None:
    """Every coupon a touch hands out must be one of the tenant's coupon templates."""
    names = {t.coupon for a in policy.arms for t in a.touches if t.coupon}
    if not names:
        return
    have = {
        t.name
        for t in CouponTemplate.select(CouponTemplate.name).where(
            (CouponTemplate.tenant == tenant_id) & CouponTemplate.name.in_(sorted(names))
        )
    }
    missing = sorted(names - have)
    if missing:
        raise ApiError(
            400,
            "invalid_policy",
            f"coupon templates not found for this tenant: {missing}",
            field="arms[].touches[].coupon",
        )


def coupon_faces(tenant_id: int, policy: Policy) -> dict[str, int]:
    """Face value in fen of each coupon template the policy names: what a coupon touch costs
    the budget and the stop-loss when it is decided."""
    names = sorted({t.coupon for a in policy.arms for t in a.touches if t.coupon})
    if not names:
        return {}
    rows = CouponTemplate.select().where(
        (CouponTemplate.tenant == tenant_id) & CouponTemplate.name.in_(names)
    )
    return {r.name: int(r.amount_off_fen) for r in rows}


def loaded(row: PolicyRow) -> Policy:
    """The stored source parsed again by the very parser that validated it when stored
    (JSON text as JSON, YAML as YAML, flow-style YAML included): the parser is the truth."""
    return parse_policy(row.source)


def readable(row: PolicyRow) -> Policy:
    """`loaded` for a request: a stored row the parser now refuses is a 409 naming why (fix it
    with PUT), not a 500."""
    try:
        return loaded(row)
    except PolicyError as exc:
        raise ApiError(
            409,
            "policy_unreadable",
            f"policy {row.name!r} as stored cannot be read ({exc}); replace it with PUT",
        ) from None


def description(row: PolicyRow) -> str:
    """The policy's description, or why its stored source cannot be read."""
    try:
        return loaded(row).description
    except PolicyError as exc:
        return f"无法读取：{exc}"


def as_dict(row: PolicyRow, with_source: bool = True) -> dict:
    """The row as the API shows it. A row stored by an older version that the parser now
    refuses is listed with its `error` (so one bad row never breaks the list, and the merchant
    can PUT a fixed source), not a 500."""
    try:
        p = loaded(row)
    except PolicyError as exc:
        out = {
            "name": row.name,
            "active": row.active,
            "version": row.version,
            "error": str(exc),
            "created_ms": row.created_ms,
            "updated_ms": row.updated_ms,
        }
        if with_source:
            out["source"] = row.source
        return out
    out = {
        "name": row.name,
        "active": row.active,
        "version": row.version,
        "description": p.description,
        "trigger": p.trigger,
        "arms": [a.name for a in p.arms],
        "holdout_share": p.holdout_share,
        "allocation": p.allocation,
        "rank_by": p.rank_by,
        "uplift_model": row.uplift_model is not None,
        "created_ms": row.created_ms,
        "updated_ms": row.updated_ms,
    }
    if with_source:
        out["source"] = row.source
    return out


def _source_text(body: dict) -> str:
    if "preset" in body:
        return preset_source(body["preset"])
    if "source" in body:
        return body["source"]
    return json.dumps(body["policy"], ensure_ascii=False)


def _stored_loads(row_id: int) -> None:
    """Read the row just written back and load it, inside the writing transaction: a policy
    that cannot be loaded as stored is never committed (a failure rolls the write back)."""
    loaded(PolicyRow.get_by_id(row_id))


def create(tenant_id: int, body: dict, now_ms: int) -> PolicyRow:
    """Store a new policy after checking it parses and names only existing coupons, in one
    transaction; 409 `policy_exists` when the name is taken (PUT replaces)."""
    text = _source_text(body)
    policy = parse(text)
    try:
        with write_transaction():
            check_coupons(tenant_id, policy)
            row = PolicyRow.create(
                tenant=tenant_id,
                name=policy.name,
                source=text,
                active=bool(body.get("active", False)),
                created_ms=now_ms,
                updated_ms=now_ms,
            )
            _stored_loads(row.id)
            return row
    except peewee.IntegrityError:
        raise ApiError(
            409, "policy_exists", f"a policy named {policy.name!r} exists; PUT to replace it"
        ) from None


def get(tenant_id: int, name: str) -> PolicyRow:
    """The tenant's policy of that name, or a 404: policies are addressed by name."""
    row = PolicyRow.get_or_none((PolicyRow.tenant == tenant_id) & (PolicyRow.name == name))
    if row is None:
        raise ApiError(404, "not_found", f"no policy named {name!r}")
    return row


def all_rows(tenant_id: int) -> list[PolicyRow]:
    """Every policy of the tenant by name, active or not: the lists of the admin API, the
    dashboard's pages and its trial form."""
    return list(PolicyRow.select().where(PolicyRow.tenant == tenant_id).order_by(PolicyRow.name))


def replace(tenant_id: int, name: str, body: dict, now_ms: int) -> PolicyRow:
    """A new version of a policy (same name; the version counts up so touches say which text
    decided them); checked as on create."""
    row = get(tenant_id, name)
    text = _source_text(body)
    policy = parse(text)
    if policy.name != name:
        raise ApiError(400, "invalid_policy", "name: a policy cannot be renamed", field="name")
    with write_transaction():
        check_coupons(tenant_id, policy)
        PolicyRow.update(
            source=text,
            version=PolicyRow.version + 1,
            updated_ms=now_ms,
            active=bool(body.get("active", row.active)),
        ).where(PolicyRow.id == row.id).execute()
        _stored_loads(row.id)
    return get(tenant_id, name)


def set_active(tenant_id: int, name: str, active: bool, now_ms: int) -> PolicyRow:
    """Switch a policy on or off for the nightly job; switching on re-checks that its stored
    text still parses and its coupons exist, so the job never meets an unreadable policy."""
    row = get(tenant_id, name)
    if active:
        # a stored source the parser now refuses is a 409 policy_unreadable, as on preview
        check_coupons(tenant_id, readable(row))
    with write_transaction():
        PolicyRow.update(active=active, updated_ms=now_ms).where(PolicyRow.id == row.id).execute()
    return get(tenant_id, name)


def set_uplift_model(row: PolicyRow, model: dict) -> None:
    """Store the uplift learner fitted for this policy (`rank_by: uplift` ranks by it)."""
    with write_transaction():
        PolicyRow.update(uplift_model=json.dumps(model)).where(PolicyRow.id == row.id).execute()


def delete(tenant_id: int, name: str) -> None:
    """Policies with touches are kept for the reports: deactivate them instead."""
    row = get(tenant_id, name)
    if row.touches.exists():
        raise ApiError(
            409,
            "policy_has_touches",
            "this policy has sent or logged touches that reports need; deactivate it instead",
        )
    with write_transaction():
        row.delete_instance()


def active_rows(
    tenant_id: int, trigger: bool | None = None, unreadable: list[dict] | None = None
) -> list[tuple[PolicyRow, Policy]]:
    """The tenant's active policies, parsed (all, or only trigger / only nightly ones).

    A stored row the parser now refuses (stored before it got stricter) is skipped with a
    warning, never raised: one bad row must not stop the tenant's other policies every night.
    If `unreadable` is given, each skipped row is appended to it as {"policy", "error"} so the
    caller can report it (the job's summary names them).
    """
    rows = PolicyRow.select().where((PolicyRow.tenant == tenant_id) & PolicyRow.active)
    out = []
    for row in rows.order_by(PolicyRow.name):
        try:
            p = loaded(row)
        except PolicyError as exc:
            log.warning(
                "tenant %s: active policy %s cannot be read, skipped: %s", tenant_id, row.name, exc
            )
            if unreadable is not None:
                unreadable.append({"policy": row.name, "error": str(exc)})
            continue
        if trigger is None or (p.trigger is not None) == trigger:
            out.append((row, p))
    return out
