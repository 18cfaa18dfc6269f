"""Tenant isolation, generated from the app's own route list so a new route cannot escape it.

Tenant A gets a campus with an object of every kind (users, events, orders, merchants, coupon
templates, coupons issued and redeemed, subscriptions, consent, contact, scores, policies, runs,
touches, SMS, settings, a simulation run). Then every `/admin/v1` and `/mp/v1` route in
`/openapi.json`, and every dashboard page, is called with tenant B's credentials and A's object
ids and names in the path, the query and the body. The answers must not reveal A's data (a 2xx
names none of A's identifiers; a route addressing one of A's objects answers 4xx) and, after
every call, A's rows are exactly as they were.

A route whose path or query parameters, or body, this file does not know how to fill fails the
test: whoever adds a route adds a line here, and so tries it against another tenant.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass

import pytest
from helpers.admin_session import csrf_from, sign_in
from helpers.app import login, make_tenant
from helpers.campaigns import DAY_MS, NOW, POLICY, TODAY, add_policy, grant_all, run_job

from backend.core.calendar import day_date
from backend.services import scoring
from backend.store.models import (
    ALL_MODELS,
    CampaignRun,
    Coupon,
    CouponTemplate,
    Event,
    JobLock,
    KeyValue,
    Merchant,
    Order,
    SchemaVersion,
    SimulationRun,
    Tenant,
    Touch,
    User,
)
from backend.store.models import Policy as PolicyRow

# Tables that belong to no tenant (B's calls may change them: rate-limit counters, locks).
GLOBAL_TABLES = {SchemaVersion, JobLock, KeyValue}
# Columns whose values identify a tenant's objects; a 2xx to tenant B must name none of A's.
IDENTIFYING = (
    Tenant.appid,
    Tenant.name,
    User.openid,
    User.unionid,
    User.phone,
    User.oa_openid,
    Merchant.code,
    Merchant.name,
    CouponTemplate.name,
    PolicyRow.name,
    Event.client_id,
    Order.order_ref,
)
ID_KINDS = (CouponTemplate, Coupon, CampaignRun, Touch, SimulationRun)
SECRET_REPORT = "alpha-secret-simulation-report"
A_POLICY = POLICY.replace("name: comeback", "name: alpha_recall")
A_DORMANT = POLICY.replace("name: comeback", "name: alpha_dormant")
A_STUDENT = "alpha-student"  # dev login code: openid dev_alpha-student


def build_campus_a(app, client, tenant, clock) -> dict:
    """Tenant A's campus through the API and the nightly job; returns its objects by kind."""
    merchant = {"code": "alpha-merchant", "name": "阿尔法私房菜"}
    assert (
        client.post("/admin/v1/merchants", json=merchant, headers=tenant.admin).status_code == 201
    )
    openids = [f"alpha-u{n:02d}" for n in range(20)]
    events = []
    for n, openid in enumerate(openids):
        for k in range(3):
            ts = NOW - (5 + 3 * k) * DAY_MS
            events.append({"user": openid, "id": f"alpha-e{n}-{k}", "type": "app_open", "ts": ts})
        props = {"order_id": f"alpha-order-{n}", "amount_fen": 2300, "merchant": "alpha-merchant"}
        ts = NOW - 5 * DAY_MS + 60_000
        events.append({"user": openid, "id": f"alpha-pay{n}", "type": "order_paid", "ts": ts})
        events[-1]["props"] = props
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == len(events), resp.get_json()
    grant_all(app, tenant)
    add_policy(client, tenant, A_POLICY)
    add_policy(client, tenant, A_DORMANT, active=False)

    templates = {}
    for name, claimable in (
        ("alpha-claimable", True),
        ("alpha-gift", False),
        ("alpha-idle", False),
    ):
        body = {
            "name": name,
            "amount_off_fen": 500,
            "min_spend_fen": 1500,
            "validity_days": 7,
            "budget": 50,
            "per_user_limit": 2,
            "merchant": "alpha-merchant",
            "claimable": claimable,
        }
        resp = client.post("/admin/v1/coupon-templates", json=body, headers=tenant.admin)
        assert resp.status_code == 201, resp.get_json()
        templates[name] = resp.get_json()["id"]

    auth = login(client, tenant, A_STUDENT)
    student = f"dev_{A_STUDENT}"
    subs = {"id": "alpha-sub-1", "results": {"tmpl_saved": "accept"}}
    assert client.post("/mp/v1/subscriptions", json=subs, headers=auth).status_code == 200
    claimed = client.post(
        "/mp/v1/coupons/claim", json={"template_id": templates["alpha-claimable"]}, headers=auth
    )
    assert claimed.status_code == 201, claimed.get_json()
    redeemed = claimed.get_json()["id"]
    order = {"order_id": "alpha-redeem-order", "order_amount_fen": 3000}
    resp = client.post(f"/mp/v1/coupons/{redeemed}/redeem", json=order, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    resp = client.post(
        f"/admin/v1/coupon-templates/{templates['alpha-gift']}/issue",
        json={"user": student},
        headers=tenant.admin,
    )
    assert resp.status_code == 201, resp.get_json()
    held = resp.get_json()["id"]
    assert client.post("/mp/v1/me/opt-out", headers=auth).status_code == 200
    assert client.post("/mp/v1/me/opt-in", headers=auth).status_code == 200
    for openid, phone in ((student, "+8613900000042"), (openids[0], "+8613900000043")):
        contact = {"phone": phone, "oa_openid": f"alpha-oa-{openid}"}
        resp = client.patch(f"/admin/v1/users/{openid}/contact", json=contact, headers=tenant.admin)
        assert resp.status_code == 200, resp.get_json()
    old_break = {"name": "alpha-summer", "from": "2025-07-01", "to": "2025-08-31"}
    settings = {"calendar": {"breaks": [old_break]}}
    assert (
        client.patch("/admin/v1/settings", json=settings, headers=tenant.admin).status_code == 200
    )

    run_job(app, tenant)  # night one: scores, decisions, touches, sends
    clock.advance(days=8)  # the SMS step of the arm is due a week later
    run_job(app, tenant, now=NOW + 8 * DAY_MS, day=TODAY + 8)
    with app.app_context():
        run = SimulationRun.create(
            tenant=tenant.id,
            created_ms=NOW,
            updated_ms=NOW,
            status="done",
            progress=1.0,
            request=json.dumps(
                {"policies": [{"name": "alpha_recall"}], "users": 100, "days": 7, "seed": 0}
            ),
            result="{}",
            report_html=f"<p>{SECRET_REPORT}</p>",
        )
        touched = sorted({t.user.openid for t in Touch.select().where(Touch.tenant == tenant.id)})
        assert touched, "the job touched nobody: the campus would test nothing"
        assert CampaignRun.select().where(CampaignRun.tenant == tenant.id).count() >= 2
    return {
        "template_id": sorted(templates.values()),
        "coupon_id": [redeemed, held],
        "name": ["alpha_recall", "alpha_dormant"],
        "openid": [student, touched[0]],
        "run_id": [run.id],
        "date": [day_date(TODAY).isoformat()],
        "policy": ["alpha_recall"],
        "from": [day_date(TODAY).isoformat()],
        "to": [day_date(TODAY + 8).isoformat()],
    }


# What tenant B sends: A's objects wherever a route takes one. Keyed "METHOD /path".
def _import_body(objs: dict) -> dict:
    events = [
        {"user": o, "id": "alpha-e0-0", "type": "app_open", "ts": NOW - DAY_MS}
        for o in objs["openid"]
    ]
    events.append(
        {
            "user": objs["openid"][0],
            "id": "b-pay",
            "type": "order_paid",
            "ts": NOW - DAY_MS,
            "props": {"order_id": "alpha-order-0", "amount_fen": 100, "merchant": "alpha-merchant"},
        }
    )
    return {"events": events}


TEMPLATE_BODY = {
    "name": "b-template",
    "amount_off_fen": 100,
    "validity_days": 3,
    "budget": 1,
    "merchant": "alpha-merchant",
}
BODIES = {
    "POST /admin/v1/merchants": lambda o: {"code": "alpha-merchant", "name": "B's own"},
    "POST /admin/v1/coupon-templates": lambda o: TEMPLATE_BODY,
    "PATCH /admin/v1/coupon-templates/{template_id}": lambda o: {"budget": 0, "active": False},
    "POST /admin/v1/coupon-templates/{template_id}/issue": lambda o: {"user": o["openid"][0]},
    "POST /admin/v1/events/import": _import_body,
    "PATCH /admin/v1/settings": lambda o: {"tiers": {"risk_silent_days": 9}},
    "POST /admin/v1/policies": lambda o: {"source": A_POLICY, "active": True},
    "PUT /admin/v1/policies/{name}": lambda o: {"source": A_DORMANT.replace("0.3", "0.5")},
    "PATCH /admin/v1/users/{openid}/contact": lambda o: {"phone": "+8613000000000"},
    "POST /mp/v1/login": lambda o: {"code": "bravo"},
    "POST /mp/v1/events": lambda o: {
        "events": [{"id": "alpha-e0-0", "type": "app_open", "ts": NOW - 60_000}]
    },
    "POST /mp/v1/coupons/claim": lambda o: {"template_id": o["template_id"][0]},
    "POST /mp/v1/coupons/{coupon_id}/redeem": lambda o: {
        "order_id": "alpha-redeem-order",
        "order_amount_fen": 5000,
    },
    "POST /mp/v1/subscriptions": lambda o: {
        "id": "alpha-sub-1",
        "results": {"tmpl_saved": "accept"},
    },
}
# Dashboard forms (HTML pages are not in the OpenAPI document; they come from the URL map).
FORMS = {
    "POST /admin/policies/{name}/check": lambda o: {"source": A_POLICY, "action": "dry_run"},
    "POST /admin/simulations": lambda o: {
        "policy": f"saved:{o['name'][0]}",
        "users": "100",
        "days": "7",
    },
    "POST /admin/simulations/{run_id}/cancel": lambda o: {},
}
DASHBOARD_QUERY = {"/admin/": ("policy", "from", "to"), "/admin/users": ("openid",)}
# Dashboard routes that read no tenant's data (sign-in itself, static files).
DASHBOARD_UNSCOPED = {"/admin/login", "/admin/logout"}


def snapshot(app, tenant_id: int) -> dict:
    """Every row of tenant A, table by table. A table must say whose it is, so a table added
    later is either checked here or declared global above."""
    with app.app_context():
        a_users = User.select(User.id).where(User.tenant == tenant_id)
        out = {}
        for model in ALL_MODELS:
            if model in GLOBAL_TABLES:
                continue
            fields = model._meta.fields
            if model is Tenant:
                query = model.select().where(model.id == tenant_id)
            elif "tenant" in fields:
                query = model.select().where(fields["tenant"] == tenant_id)
            elif "user" in fields:
                query = model.select().where(fields["user"].in_(a_users))
            else:
                pytest.fail(f"table {model.__name__} has no tenant or user: classify it here")
            out[model.__name__] = sorted(query.order_by(model._meta.primary_key).tuples())
        return out


def identifiers(app, tenant_id: int) -> tuple[set[str], set[int]]:
    """The strings naming a tenant's objects, and its object ids."""
    with app.app_context():
        strings = set()
        for field in IDENTIFYING:
            model = field.model
            where = (model.id == tenant_id) if model is Tenant else (model.tenant == tenant_id)
            strings |= {v for (v,) in model.select(field).where(where).tuples() if v}
        ids = set()
        for model in ID_KINDS:
            ids |= {i for (i,) in model.select(model.id).where(model.tenant == tenant_id).tuples()}
    return strings, ids


def leaks(text: str, data, strings: set[str], ids: set[int]) -> list[str]:
    """Which of `strings` the answer contains, and which of `ids` it gives as an id."""
    found = [s for s in strings if s in text]

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                idish = key == "id" or key.endswith("_id")
                number = isinstance(value, int) and not isinstance(value, bool)
                if idish and number and value in ids:
                    found.append(f"{key}={value}")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found


def fill(path: str, objs: dict):
    """Every way to put A's objects into the path; fails on a parameter it does not know."""
    names = re.findall(r"{(\w+)}", path)
    for name in names:
        if name not in objs:
            pytest.fail(
                f"{path}: no value for path parameter {name!r}. Add tenant A's objects of that "
                "kind to build_campus_a() so this route is tried against another tenant."
            )
    for values in itertools.product(*(objs[n] for n in names)):
        named = dict(zip(names, values, strict=True))
        yield named, path.format(**named)


class Checker:
    """Calls as tenant B and checks each answer against what tenant A holds."""

    def __init__(self, app, a, b, objs):
        self.app, self.a, self.b, self.objs = app, a, b, objs
        self.before = snapshot(app, a.id)
        self.a_strings, self.a_ids = identifiers(app, a.id)
        assert {"alpha_recall", "alpha-merchant", "dev_alpha-student"} <= self.a_strings
        self.tried = 0

    def check(self, label: str, resp, addressed: dict, sent=None) -> None:
        """`sent`: the request's body; a string B sent itself may be echoed back (an error
        naming the unknown merchant B asked for is not a leak; B's object is then B's)."""
        self.tried += 1
        assert resp.status_code < 500, (label, resp.status_code, resp.get_data(as_text=True))
        b_strings, b_ids = identifiers(self.app, self.b.id)
        strings, ids = self.a_strings - b_strings, self.a_ids - b_ids
        echo = json.dumps(sent, ensure_ascii=False) if sent is not None else ""
        foreign = {k: v for k, v in addressed.items() if v in strings or v in ids}
        if foreign and resp.status_code < 400:
            pytest.fail(f"{label}: {resp.status_code} for tenant A's {foreign}")
        if resp.status_code < 300:
            data = resp.get_json(silent=True)
            text = resp.get_data(as_text=True)
            if data is not None:
                text = json.dumps(data, ensure_ascii=False)
            found = leaks(text, data, {s for s in strings if s not in echo}, ids)
            assert not found, f"{label} answered tenant B with tenant A's {found}"
        after = snapshot(self.app, self.a.id)
        changed = [t for t in self.before if self.before[t] != after[t]]
        assert not changed, f"{label} changed tenant A's {changed}"


def route_order(item) -> tuple:
    """Reads first, then changes to A's objects, then creations (B may create an object named
    like one of A's, after which that name is B's too), and B's own erasure last."""
    method, path = item
    return (method != "get", "{" not in path and method != "get", path == "/mp/v1/me", path)


@dataclass
class Call:
    label: str
    method: str
    url: str
    query: dict
    addressed: dict  # the path and query values that name one of A's objects
    body: dict | None = None
    form: dict | None = None


def api_calls(app, client, objs: dict) -> list[Call]:
    """Every /admin/v1 and /mp/v1 operation of /openapi.json, with A's objects filled in."""
    spec = client.get("/openapi.json").get_json()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/admin/v1/", "/mp/v1/")):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            assert path in spec["paths"], f"{rule.rule} is missing from /openapi.json"
    routes = [
        (method, path)
        for path, ops in spec["paths"].items()
        if path.startswith(("/admin/v1/", "/mp/v1/"))
        for method in ops
    ]
    unused = set(BODIES) - {f"{m.upper()} {p}" for m, p in routes}
    assert not unused, f"BODIES names routes that no longer exist: {unused}"
    calls = []
    for method, path in sorted(routes, key=route_order):
        op = spec["paths"][path][method]
        key = f"{method.upper()} {path}"
        body = None
        if "requestBody" in op or key in BODIES:
            if key not in BODIES:
                pytest.fail(f"{key} takes a body: add one naming tenant A's objects to BODIES")
            body = BODIES[key](objs)
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        for name in names:
            if name not in objs:
                pytest.fail(f"{key}: no value for query parameter {name!r}; add A's to objs")
        queries = [{}] + [{n: objs[n][0]} for n in names]
        if len(names) > 1:
            queries.append({n: objs[n][0] for n in names})
        for addressed, url in fill(path, objs):
            for query in queries:
                label = f"{key} {addressed} {query}"
                calls.append(Call(label, method.upper(), url, query, {**addressed, **query}, body))
    return calls


def dashboard_calls(app, objs: dict) -> list[Call]:
    """Every dashboard page and form (from the URL map), with A's objects filled in."""
    rules = [
        r
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("dashboard.")
        and "<path:" not in r.rule  # static files
        and not r.rule.startswith("/admin/assets/")
        and r.rule not in DASHBOARD_UNSCOPED
    ]
    assert len(rules) >= 8
    calls = []
    for rule in rules:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            key = f"{method} {path}"
            form = None
            if method != "GET":
                if key not in FORMS:
                    pytest.fail(f"{key}: add a form naming tenant A's objects to FORMS")
                form = FORMS[key](objs)
            queries = [{}] + [{n: objs[n][0]} for n in DASHBOARD_QUERY.get(path, ())]
            for addressed, url in fill(path, objs):
                for query in queries:
                    label = f"{key} {addressed} {query}"
                    calls.append(
                        Call(label, method, url, query, {**addressed, **query}, None, form)
                    )
    return calls


def grow_campus_a(app, client, tenant, objs) -> None:
    """More of everything for tenant A: new users, events, orders, a template, a coupon, another
    run of the job. What tenant B sees must not move."""
    events = []
    for n in range(12):
        ts = NOW - 4 * DAY_MS
        events.append(
            {"user": f"alpha-v{n:02d}", "id": f"alpha-f{n}", "type": "app_open", "ts": ts}
        )
        props = {"order_id": f"alpha-more-{n}", "amount_fen": 999, "merchant": "alpha-merchant"}
        events.append(
            {"user": f"alpha-v{n:02d}", "id": f"alpha-g{n}", "type": "order_paid", "ts": ts}
        )
        events[-1]["props"] = props
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == len(events), resp.get_json()
    body = {**TEMPLATE_BODY, "name": "alpha-later", "merchant": "alpha-merchant", "budget": 9}
    resp = client.post("/admin/v1/coupon-templates", json=body, headers=tenant.admin)
    assert resp.status_code == 201, resp.get_json()
    resp = client.post(
        f"/admin/v1/coupon-templates/{resp.get_json()['id']}/issue",
        json={"user": "alpha-v00"},
        headers=tenant.admin,
    )
    assert resp.status_code == 201, resp.get_json()
    run_job(app, tenant, now=NOW + 8 * DAY_MS, day=TODAY + 8)
    with app.app_context():  # the day B was scored on now counts A's new users too
        scoring.score_tenant(Tenant.get_by_id(tenant.id), TODAY + 8)


def build_campus_b(app, client, other) -> None:
    """A little of everything for tenant B too, so B's reads have answers that could mix."""
    now = NOW + 8 * DAY_MS  # build_campus_a left the clock a week on
    events = [
        {"user": f"bravo-u{n}", "id": f"bravo-e{n}-{k}", "type": "app_open", "ts": ts}
        for n in range(8)
        for k, ts in enumerate((now - 5 * DAY_MS, now - 9 * DAY_MS))
    ]
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=other.admin)
    assert resp.get_json()["accepted"] == len(events), resp.get_json()
    add_policy(client, other, POLICY.replace("name: comeback", "name: bravo_recall"))
    run_job(app, other, now=now, day=TODAY + 8)


def b_view(client, calls: list[Call], headers_for) -> dict:
    """What tenant B reads: every GET's status and answer."""
    out = {}
    for c in calls:
        if c.method == "GET":
            resp = client.get(c.url, query_string=c.query, headers=headers_for(c.url))
            out[c.label] = (resp.status_code, resp.get_data(as_text=True))
    return out


def test_no_api_route_lets_another_tenant_read_or_change_anything(app, client, tenant, clock):
    objs = build_campus_a(app, client, tenant, clock)
    other = make_tenant(app, "wxtest00000000002")
    build_campus_b(app, client, other)
    checker = Checker(app, tenant, other, objs)
    bravo = login(client, other, "bravo")

    def headers_for(url: str) -> dict:
        if url == "/mp/v1/login":
            return {"X-Huiliu-Appid": other.appid}
        return dict(other.admin) if url.startswith("/admin/") else dict(bravo)

    calls = api_calls(app, client, objs)
    for c in calls:
        resp = client.open(
            c.url, method=c.method, json=c.body, query_string=c.query, headers=headers_for(c.url)
        )
        checker.check(c.label, resp, c.addressed, c.body)
    assert checker.tried >= 50
    # Nothing B reads depends on what A holds: A grows, B's answers stay byte for byte.
    bravo.update(login(client, other, "bravo"))
    seen = b_view(client, calls, headers_for)
    grow_campus_a(app, client, tenant, objs)
    again = b_view(client, calls, headers_for)
    moved = [label for label in seen if seen[label] != again[label]]
    assert not moved, f"tenant B's answers changed when tenant A's data did: {moved}"


def test_no_dashboard_page_lets_another_tenant_read_or_change_anything(app, client, tenant, clock):
    objs = build_campus_a(app, client, tenant, clock)
    other = make_tenant(app, "wxtest00000000002")
    build_campus_b(app, client, other)
    checker = Checker(app, tenant, other, objs)
    resp = sign_in(client, other.api_key)
    assert resp.status_code == 302
    token = csrf_from(client.get("/admin/policies").get_data(as_text=True))
    calls = dashboard_calls(app, objs)
    for c in calls:
        form = None if c.form is None else {**c.form, "csrf_token": token}
        resp = client.open(c.url, method=c.method, data=form, query_string=c.query)
        checker.check(c.label, resp, c.addressed, c.form)
    assert checker.tried >= 10
    seen = b_view(client, calls, lambda url: {})
    grow_campus_a(app, client, tenant, objs)
    again = b_view(client, calls, lambda url: {})
    moved = [label for label in seen if seen[label] != again[label]]
    assert not moved, f"tenant B's pages changed when tenant A's data did: {moved}"


def test_the_checker_sees_a_leak(app, client, tenant, clock):
    """The check itself can fail: tenant A's own key, read as if it were B's, is caught."""
    objs = build_campus_a(app, client, tenant, clock)
    other = make_tenant(app, "wxtest00000000002")
    checker = Checker(app, tenant, other, objs)
    with pytest.raises(AssertionError, match="alpha_recall|run_id|id="):
        checker.check("runs", client.get("/admin/v1/campaign-runs", headers=tenant.admin), {})
    with pytest.raises(pytest.fail.Exception, match="tenant A's"):
        resp = client.get("/admin/v1/policies/alpha_recall", headers=tenant.admin)
        checker.check("policy", resp, {"name": "alpha_recall"})


KNOWN = {k: ["x"] for k in ("template_id", "coupon_id", "name", "openid", "run_id")}
KNOWN |= {k: ["2026-03-10"] for k in ("date", "from", "to")} | {"policy": ["x"]}


def test_a_new_route_it_cannot_fill_fails_the_sweep(app, client):
    """Nobody adds a route without saying how to try it against another tenant."""
    from backend.web.openapi import documented

    @documented("a route added later", auth="api_key")
    def gadget(gadget_id: str):
        return {"gadget": gadget_id}

    app.add_url_rule("/admin/v1/gadgets/<gadget_id>", view_func=gadget)
    with pytest.raises(pytest.fail.Exception, match="gadget_id"):
        api_calls(app, client, KNOWN)


def test_a_new_route_with_a_body_it_has_no_body_for_fails_the_sweep(app, client):
    from backend.web.openapi import documented

    @documented("a route added later", request={"type": "object"}, auth="api_key")
    def gadgets():
        return {}

    app.add_url_rule("/admin/v1/gadgets", view_func=gadgets, methods=["POST"])
    with pytest.raises(pytest.fail.Exception, match="POST /admin/v1/gadgets takes a body"):
        api_calls(app, client, KNOWN)
