"""Admin routes for recall policies, the campaign runs and the touches they made."""

from __future__ import annotations

from flask import current_app, g, jsonify, request

from backend.core import seeds
from backend.core.calendar import china_day
from backend.core.policy import policy_schema
from backend.core.policy.spec import NAME_PATTERN
from backend.services import campaign_log, policies, reports, scoring, uplift, users
from backend.services.campaigns import outbox, preview
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
USER_TOUCHES = 500  # the latest a user's touch list shows
DAY_QUERY = {"date": {"type": "string", "description": "YYYY-MM-DD China date; today by default"}}


def _now_ms() -> int:
    """The app's clock (a fake one in tests and the simulator), never the wall's."""
    return current_app.config["CLOCK"].now_ms()


def _today() -> int:
    """Today's China day number by the app's clock: the default day of previews and reports."""
    return int(china_day(_now_ms()))


@bp.get("/policy-schema")
@documented("The JSON schema every policy file is checked against", response={"type": "object"})
def get_policy_schema():
    """Lets a merchant's editor or CI check a policy file before sending it; public, as it holds no
    tenant data."""
    return jsonify(policy_schema())


@bp.get("/policies")
@documented("List the tenant's recall policies", response={"type": "object"}, auth="api_key")
@require_api_key
def list_policies():
    """What a merchant has (without sources, to stay small) and which presets they could
    start from."""
    return jsonify(
        {
            "policies": [
                policies.as_dict(r, with_source=False) for r in policies.all_rows(g.tenant_id)
            ],
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
    """A merchant adds a policy; it is checked whole (schema, coupons, re-read as stored) before it
    is kept."""
    body = validated(POLICY_BODY)
    row = policies.create(g.tenant_id, body, _now_ms())
    return jsonify(policies.as_dict(row)), 201


@bp.get("/policies/<name>")
@documented("One policy with its source", response=POLICY_OUT, auth="api_key", errors=(404,))
@require_api_key
def get_policy(name: str):
    """One policy with its stored source, so a merchant can edit it and PUT it back."""
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
    """A merchant edits a policy in place: its touches and reports keep their name, the version
    counts the edits."""
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
    """Puts a policy in front of tonight's job, once its source reads and its coupons exist."""
    return jsonify(policies.as_dict(policies.set_active(g.tenant_id, name, True, _now_ms())))


@bp.post("/policies/<name>/deactivate")
@documented("Stop running this policy (its touches stay)", response=POLICY_OUT, auth="api_key")
@require_api_key
def deactivate_policy(name: str):
    """Stops a policy without losing what it did: its touches stay for the reports."""
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
    """Removes a policy added by mistake; one that touched anyone is kept for the reports (409)."""
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
    """Shows what a policy would do on a scored day before it is let loose on anyone."""
    row = policies.get(g.tenant_id, name)
    day = scoring.parse_day(request.args.get("date"), _today())
    return jsonify(preview.preview(row, policies.readable(row), day, _now_ms()))


@bp.post("/policies/<name>/uplift-model")
@documented(
    "Fit the two-model uplift learner on this tenant's finished treated and holdout touches",
    response={"type": "object"},
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def fit_uplift(name: str):
    """Gives `rank_by: uplift` its model: fitted on the tenant's own finished touches and stored
    with the policy."""
    row = policies.get(g.tenant_id, name)
    model = uplift.fit_for_tenant(g.tenant_id)
    policies.set_uplift_model(row, model.as_dict())
    return jsonify(model.as_dict())


@bp.get("/campaign-runs")
@documented(
    "The latest campaign runs and their counts", response={"type": "object"}, auth="api_key"
)
@require_api_key
def list_runs():
    """Tells a merchant whether the nightly job ran and what it did."""
    return jsonify({"runs": campaign_log.recent_runs(g.tenant_id)})


@bp.get("/users/<openid>/touches")
@documented(
    "Every touch decided for a user: sent, held out, skipped (with the reason) or failed",
    response={"type": "object"},
    auth="api_key",
    errors=(404,),
)
@require_api_key
def user_touches(openid: str):
    """Answers a merchant asking why a user was (or was not) messaged."""
    user = users.by_openid(g.tenant_id, openid)
    rows = campaign_log.user_touches(g.tenant_id, user.id, USER_TOUCHES)
    return jsonify({"user": openid, "touches": [outbox.touch_dict(t) for t in rows]})


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
    """SMS and Official Account messages need a phone number or OA openid the mini-program does not
    give; the merchant supplies them."""
    body = validated(CONTACT_SCHEMA)
    user = users.set_contact(users.by_openid(g.tenant_id, openid).id, body)
    return jsonify({"user": openid, "phone": user.phone, "oa_openid": user.oa_openid})


REPORT_QUERY = {
    "policy": {"type": "string", "description": "only this policy"},
    "from": {"type": "string", "description": "first decision day, YYYY-MM-DD"},
    "to": {"type": "string", "description": "last decision day, YYYY-MM-DD"},
}


def _report_span() -> tuple[str | None, int | None, int | None]:
    """The report's policy and decision-day span from the query string (400 on a bad date)."""
    return reports.parse_span(g.tenant_id, request.args, _today())


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
    """The measures a merchant judges a policy by, the same numbers the CLI report prints."""
    policy, day_from, day_to = _report_span()
    return jsonify(reports.report(g.tenant_id, policy, day_from, day_to))


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
    """Why users were not messaged, day by day: the guard rails at work, for a merchant to audit."""
    policy, day_from, day_to = _report_span()
    return jsonify({"ledger": reports.ledger(g.tenant_id, policy, day_from, day_to)})
