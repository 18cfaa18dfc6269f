"""Admin routes. Every query filters by g.tenant_id, set from the API key and nothing else."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from backend.core.calendar import CALENDAR_FILES, china_day
from backend.errors import ApiError
from backend.services import coupons, events, scoring, tenants, users
from backend.services.event_validation import IMPORT_EARLIEST_MS, IMPORT_EVENT_SCHEMA
from backend.web import explain
from backend.web.auth import require_api_key
from backend.web.openapi import documented, read_json, validated

bp = Blueprint("admin_api", __name__, url_prefix="/admin/v1")

MAX_IMPORT_BATCH = 2000

IMPORT_SCHEMA, _IMPORT_ENVELOPE = events.batch_schemas(IMPORT_EVENT_SCHEMA, MAX_IMPORT_BATCH)
MAX_IMPORT_BODY = 16 * 1024 * 1024
MERCHANT_SCHEMA = {
    "type": "object",
    "required": ["code", "name"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}
ISSUE_SCHEMA = {
    "type": "object",
    "required": ["user"],
    "additionalProperties": False,
    "properties": {
        "user": {"type": "string", "minLength": 1, "maxLength": 128, "description": "openid"}
    },
}
TEMPLATES_SCHEMA = {
    "type": "object",
    "properties": {"templates": {"type": "array", "items": coupons.TEMPLATE_SCHEMA}},
}
USER_SCHEMA = {"type": "object", "description": "profile, counts, coupons and allowances"}


def _now_ms() -> int:
    """The app's clock (a fake one in tests and the simulator), never the wall's."""
    return current_app.config["CLOCK"].now_ms()


@bp.get("/merchants")
@documented("List the tenant's merchants", response={"type": "object"}, auth="api_key")
@require_api_key
def list_merchants():
    """The shops a tenant's coupons can be tied to, by the codes templates name them with."""
    rows = tenants.merchants(g.tenant_id)
    return jsonify({"merchants": [{"code": m.code, "name": m.name} for m in rows]})


@bp.post("/merchants")
@documented(
    "Add a merchant",
    request=MERCHANT_SCHEMA,
    response=MERCHANT_SCHEMA,
    status=201,
    auth="api_key",
    errors=(409,),
)
@require_api_key
def add_merchant():
    """A tenant (one mini-program) serves several shops; a coupon template can be limited to one
    of them."""
    body = validated(MERCHANT_SCHEMA)
    m = tenants.add_merchant(g.tenant_id, body["code"], body["name"])
    return jsonify({"code": m.code, "name": m.name}), 201


@bp.get("/coupon-templates")
@documented("List coupon templates", response=TEMPLATES_SCHEMA, auth="api_key")
@require_api_key
def list_templates():
    """The coupon templates a merchant's policies and staff can hand out, with what is left of
    each budget."""
    rows = coupons.templates(g.tenant_id)
    return jsonify({"templates": [coupons.template_dict(t) for t in rows]})


@bp.post("/coupon-templates")
@documented(
    "Create a coupon template (满减)",
    request=coupons.TEMPLATE_CREATE_SCHEMA,
    response=coupons.TEMPLATE_SCHEMA,
    status=201,
    auth="api_key",
)
@require_api_key
def create_template():
    """A merchant defines a coupon (满减) once; policies and staff then issue it within its
    budget."""
    body = validated(coupons.TEMPLATE_CREATE_SCHEMA)
    if body.get("min_spend_fen", 0) and body["amount_off_fen"] >= body["min_spend_fen"]:
        raise ApiError(400, "invalid_request", "amount_off_fen must be below min_spend_fen")
    t = coupons.create_template(g.tenant_id, body, _now_ms())
    return jsonify(coupons.template_dict(coupons.get_template(g.tenant_id, t.id))), 201


@bp.get("/coupon-templates/<id:template_id>")
@documented("One coupon template", response=coupons.TEMPLATE_SCHEMA, auth="api_key", errors=(404,))
@require_api_key
def get_template(template_id: int):
    """One template with its issued count, so a merchant sees how much budget is left."""
    return jsonify(coupons.template_dict(coupons.get_template(g.tenant_id, template_id)))


@bp.patch("/coupon-templates/<id:template_id>")
@documented(
    "Change a coupon template (budget never below what was issued)",
    request=coupons.TEMPLATE_PATCH_SCHEMA,
    response=coupons.TEMPLATE_SCHEMA,
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def patch_template(template_id: int):
    """A merchant raises a budget, extends validity or stops a coupon without losing what was
    issued."""
    body = validated(coupons.TEMPLATE_PATCH_SCHEMA)
    return jsonify(coupons.template_dict(coupons.update_template(g.tenant_id, template_id, body)))


@bp.delete("/coupon-templates/<id:template_id>")
@documented(
    "Delete a template that never issued a coupon",
    response={"type": "object"},
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def delete_template(template_id: int):
    """Removes a template made by mistake; one that issued coupons stays (409)."""
    coupons.delete_template(g.tenant_id, template_id)
    return jsonify({"deleted": template_id})


@bp.post("/coupon-templates/<id:template_id>/issue")
@documented(
    "Issue a coupon from a template to a user",
    request=ISSUE_SCHEMA,
    response=coupons.COUPON_SCHEMA,
    status=201,
    auth="api_key",
    errors=(404, 409),
)
@require_api_key
def issue_coupon(template_id: int):
    """Staff hand a coupon to one user by hand (a complaint, a prize), within the template's
    budget."""
    body = validated(ISSUE_SCHEMA)
    user = users.by_openid(g.tenant_id, body["user"])
    now = _now_ms()
    coupon = coupons.issue(g.tenant_id, template_id, user, now, source="admin")
    return jsonify(coupons.coupon_dict(coupon, now)), 201


@bp.get("/users/<openid>")
@documented(
    "Look a user up: profile, activity counts, coupons and allowances",
    response=USER_SCHEMA,
    auth="api_key",
    errors=(404,),
)
@require_api_key
def get_user(openid: str):
    """A merchant looks a user up (support, a complaint): the same profile the dashboard shows."""
    user = users.by_openid(g.tenant_id, openid)
    return jsonify(users.profile(g.tenant_id, user, _now_ms()))


@bp.post("/events/import")
@documented(
    f"Import up to {MAX_IMPORT_BATCH} historical events per call (any past time)",
    request=IMPORT_SCHEMA,
    response={"type": "object"},
    auth="api_key",
    errors=(413,),
)
@require_api_key
def import_events():
    """Scores need history: a merchant loads past visits and orders before Huiliu saw any."""
    request.max_content_length = MAX_IMPORT_BODY  # history arrives in bigger batches
    result = events.ingest(
        read_json(),
        envelope=_IMPORT_ENVELOPE,
        item_schema=IMPORT_EVENT_SCHEMA,
        max_batch=MAX_IMPORT_BATCH,
        earliest_ms=IMPORT_EARLIEST_MS,
        tenant_id=g.tenant_id,
        now_ms=_now_ms(),
    )
    return jsonify(result.as_dict())


DATE_QUERY = {
    "date": {
        "type": "string",
        "format": "date",
        "description": "YYYY-MM-DD China date; the latest scored day by default",
    }
}
SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {
        "date": {"type": "string"},
        "users": {"type": "integer"},
        "tiers": {"type": "object", "additionalProperties": {"type": "integer"}},
        "segments": {"type": "object", "additionalProperties": {"type": "integer"}},
        "warnings": {"type": "integer"},
        "worth_recalling": {"type": "integer"},
        "model": {"type": ["object", "null"]},
    },
}
USER_SCORES_SCHEMA = {
    "type": "object",
    "properties": {
        "tier": {"type": "string"},
        "segment": {"type": "string"},
        "p_alive": {"type": ["number", "null"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
}


def _query_day() -> int | None:
    """The `date` query as a China day number (None: the latest scored day); 400 if unreadable."""
    text = request.args.get("date")
    if text is None:
        return None
    return scoring.parse_day(text, int(china_day(_now_ms())))


@bp.get("/scores/summary")
@documented(
    "Users per tier and RFM segment on a scored day",
    response=SUMMARY_SCHEMA,
    auth="api_key",
    query=DATE_QUERY,
    errors=(400, 404),
)
@require_api_key
def scores_summary():
    """How a tenant's users spread over tiers and segments on a day, and the model behind the
    values."""
    return jsonify(scoring.summary(g.tenant_id, _query_day()))


@bp.get("/users/<openid>/scores")
@documented(
    "One user's scores and tier with the reasons behind them",
    response=USER_SCORES_SCHEMA,
    auth="api_key",
    query=DATE_QUERY,
    errors=(400, 404),
)
@require_api_key
def user_scores(openid: str):
    """Why a user is in their tier, with the numbers: a merchant can check a score before
    trusting it."""
    user = users.by_openid(g.tenant_id, openid)
    return jsonify(explain.user_scores(g.tenant, user, _query_day()))


SETTINGS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tiers": {
            "type": "object",
            "description": "overrides of the lifecycle thresholds (see docs/scoring.md)",
            "additionalProperties": {"type": "number", "minimum": 0},
        },
        "calendar": {
            "description": "a calendar file in seeds/ (one of "
            f"{', '.join(CALENDAR_FILES)}), or the breaks themselves",
            "oneOf": [
                {"type": "string", "maxLength": 100},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["breaks"],
                    "properties": {
                        "breaks": {
                            "type": "array",
                            "maxItems": 200,
                            "items": {
                                "type": "object",
                                "required": ["from", "to"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string", "maxLength": 50},
                                    "from": {"type": "string", "format": "date"},
                                    "to": {"type": "string", "format": "date"},
                                },
                            },
                        }
                    },
                },
            ],
        },
        "nightly_at": {
            "type": "string",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
            "description": "China time (HH:MM) of the tenant's nightly run on the task queue "
            "(default 02:00)",
        },
    },
}


@bp.get("/settings")
@documented(
    "The tenant's scoring settings (tier thresholds, campus calendar)",
    response=SETTINGS_SCHEMA,
    auth="api_key",
)
@require_api_key
def get_settings():
    """The tenant's thresholds and calendar as in force, defaults included, so a merchant sees
    what scoring uses."""
    return jsonify(tenants.settings(g.tenant))


@bp.patch("/settings")
@documented(
    "Change tier thresholds or the calendar; applies from the next scoring run",
    request=SETTINGS_SCHEMA,
    response=SETTINGS_SCHEMA,
    auth="api_key",
)
@require_api_key
def patch_settings():
    """A merchant tunes the tier thresholds and term calendar to their campus; checked before
    stored."""
    body = validated(SETTINGS_SCHEMA)
    return jsonify(tenants.update_settings(g.tenant, body))
