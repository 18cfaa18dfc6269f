"""Admin routes for recall policies, the campaign runs and the touches they made."""

from __future__ import annotations

import json

from flask import current_app, g, jsonify, request

from backend.core import seeds
from backend.core.calendar import china_day, day_date
from backend.core.clock import china_iso
from backend.core.policy import policy_schema
from backend.core.policy.spec import NAME_PATTERN
from backend.services import campaigns, policies, scoring, uplift, users
from backend.store.db import write_transaction
from backend.store.models import CampaignRun, Touch, User
from backend.store.models import Policy as PolicyRow
from backend.web.admin.routes import bp
from backend.web.auth import require_api_key
from backend.web.openapi import documented, validated

POLICY_BODY = {
    "type": "object",
    "additionalProperties": False,
    "description": "exactly one of source (YAML or JSON text), policy (an object) or preset",
    "oneOf": [{"required": ["source"]}, {"required": ["policy"]}, {"required": ["preset"]}],
    "properties": {
        "source": {"type": "string", "minLength": 1, "maxLength": 100_000},
        "policy": {"type": "object"},
        "preset": {"type": "string", "pattern": NAME_PATTERN},
        "active": {"type": "boolean"},
    },
}
POLICY_OUT = {"type": "object", "description": "name, active, version, arms, source, ..."}
CONTACT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "phone": {"type": ["string", "null"], "pattern": "^\\+?[0-9]{6,15}$"},
        "oa_openid": {"type": ["string", "null"], "minLength": 1, "maxLength": 128},
    },
}
DAY_QUERY = {"date": {"type": "string", "description": "YYYY-MM-DD China date; today by default"}}


def _now_ms() -> int:
    return current_app.config["CLOCK"].now_ms()


def _today() -> int:
    return int(china_day(_now_ms()))


@bp.get("/policy-schema")
@documented("The JSON schema every policy file is checked against", response={"type": "object"})
def get_policy_schema():
    return jsonify(policy_schema())


@bp.get("/policies")
@documented("List the tenant's recall policies", response={"type": "object"}, auth="api_key")
@require_api_key
def list_policies():
    rows = PolicyRow.select().where(PolicyRow.tenant == g.tenant_id).order_by(PolicyRow.name)
    return jsonify(
        {
            "policies": [policies.as_dict(r, with_source=False) for r in rows],
            "presets": seeds.preset_names(),
        }
    )


@bp.post("/policies")
@documented(
    "Add a policy from YAML/JSON text, an object or a preset (validated; 400 names the line)",
    request=POLICY_BODY,
    response=POLICY_OUT,
    status=201,
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def create_policy():
    body = validated(POLICY_BODY)
    row = policies.create(g.tenant_id, body, _now_ms())
    return jsonify(policies.as_dict(row)), 201


@bp.get("/policies/<name>")
@documented("One policy with its source", response=POLICY_OUT, auth="api_key", errors=(404,))
@require_api_key
def get_policy(name: str):
    return jsonify(policies.as_dict(policies.get(g.tenant_id, name)))


@bp.put("/policies/<name>")
@documented(
    "Replace a policy's source (the version goes up; the name cannot change)",
    request=POLICY_BODY,
    response=POLICY_OUT,
    auth="api_key",
    errors=(404,),
)
@require_api_key
def replace_policy(name: str):
    body = validated(POLICY_BODY)
    return jsonify(policies.as_dict(policies.replace(g.tenant_id, name, body, _now_ms())))


@bp.post("/policies/<name>/activate")
@documented(
    "Let the campaign job run this policy",
    response=POLICY_OUT,
    auth="api_key",
    errors=(400, 404, 409),
)
@require_api_key
def activate_policy(name: str):
    return jsonify(policies.as_dict(policies.set_active(g.tenant_id, name, True, _now_ms())))


@bp.post("/policies/<name>/deactivate")
@documented("Stop running this policy (its touches stay)", response=POLICY_OUT, auth="api_key")
@require_api_key
def deactivate_policy(name: str):
    return jsonify(policies.as_dict(policies.set_active(g.tenant_id, name, False, _now_ms())))


@bp.delete("/policies/<name>")
@documented(
    "Delete a policy that never touched anyone",
    response={"type": "object"},
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def delete_policy(name: str):
    policies.delete(g.tenant_id, name)
    return jsonify({"deleted": name})


@bp.get("/policies/<name>/preview")
@documented(
    "Dry run of one policy on a scored day: counts by tier × arm, reasons, and a sample",
    response={"type": "object"},
    auth="api_key",
    query=DAY_QUERY,
    errors=(404, 409),
)
@require_api_key
def preview_policy(name: str):
    row = policies.get(g.tenant_id, name)
    day = scoring.parse_day(request.args.get("date"), _today())
    return jsonify(campaigns.preview(row, policies.readable(row), day, _now_ms()))


@bp.post("/policies/<name>/uplift-model")
@documented(
    "Fit the two-model uplift learner on this tenant's finished treated and holdout touches",
    response={"type": "object"},
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def fit_uplift(name: str):
    row = policies.get(g.tenant_id, name)
    model = uplift.fit_for_tenant(g.tenant_id)
    with write_transaction():
        PolicyRow.update(uplift_model=json.dumps(model.as_dict())).where(
            PolicyRow.id == row.id
        ).execute()
    return jsonify(model.as_dict())


@bp.get("/campaign-runs")
@documented(
    "The latest campaign runs and their counts", response={"type": "object"}, auth="api_key"
)
@require_api_key
def list_runs():
    rows = (
        CampaignRun.select()
        .where(CampaignRun.tenant == g.tenant_id)
        .order_by(CampaignRun.id.desc())
        .limit(50)
    )
    return jsonify(
        {
            "runs": [
                {
                    "id": r.id,
                    "date": day_date(r.day).isoformat(),
                    "status": r.status,
                    "started_at": china_iso(r.started_ms),
                    "finished_at": china_iso(r.finished_ms) if r.finished_ms else None,
                    "summary": json.loads(r.summary),
                }
                for r in rows
            ]
        }
    )


@bp.get("/users/<openid>/touches")
@documented(
    "Every touch decided for a user: sent, held out, skipped (with the reason) or failed",
    response={"type": "object"},
    auth="api_key",
    errors=(404,),
)
@require_api_key
def user_touches(openid: str):
    user = users.by_openid(g.tenant_id, openid)
    rows = (
        Touch.select(Touch, PolicyRow.name)
        .join(PolicyRow)
        .where(Touch.user == user.id)
        .order_by(Touch.day.desc(), Touch.id.desc())
        .limit(500)
    )
    return jsonify({"user": openid, "touches": [campaigns.touch_dict(t) for t in rows]})


@bp.patch("/users/<openid>/contact")
@documented(
    "Set where SMS and Official Account messages reach a user (null removes)",
    request=CONTACT_SCHEMA,
    response={"type": "object"},
    auth="api_key",
    errors=(404,),
)
@require_api_key
def set_contact(openid: str):
    body = validated(CONTACT_SCHEMA)
    user = users.by_openid(g.tenant_id, openid)
    with write_transaction():
        User.update(**body).where(User.id == user.id).execute()
    user = User.get_by_id(user.id)
    return jsonify({"user": openid, "phone": user.phone, "oa_openid": user.oa_openid})


REPORT_QUERY = {
    "policy": {"type": "string", "description": "only this policy"},
    "from": {"type": "string", "description": "first decision day, YYYY-MM-DD"},
    "to": {"type": "string", "description": "last decision day, YYYY-MM-DD"},
}


def _report_span() -> tuple[str | None, int | None, int | None]:
    from backend.services.reports import parse_span

    return parse_span(g.tenant_id, request.args, _today())


@bp.get("/reports")
@documented(
    "Recall rate, retention, ROI and incremental effect against the holdout, by policy, arm, "
    "tier and channel (the numbers `python app.py report --json` prints), and per policy "
    "`power`: how far its holdout is from the size that detects its effect at 80% power",
    response={"type": "object"},
    auth="api_key",
    query=REPORT_QUERY,
    errors=(400, 404),
)
@require_api_key
def get_report():
    from backend.services.reports import report

    policy, day_from, day_to = _report_span()
    return jsonify(report(g.tenant_id, policy, day_from, day_to))


@bp.get("/reports/ledger")
@documented(
    "The guard-rail ledger: per policy and day, sends, holdouts, quiet-hour deferrals and "
    "every reason a user was skipped or a send failed",
    response={"type": "object"},
    auth="api_key",
    query=REPORT_QUERY,
    errors=(400, 404),
)
@require_api_key
def get_ledger():
    from backend.services.reports import ledger

    policy, day_from, day_to = _report_span()
    return jsonify({"ledger": ledger(g.tenant_id, policy, day_from, day_to)})
