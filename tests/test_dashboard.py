"""The merchant dashboard over HTTP (Flask's test client, SQLite and PostgreSQL): sign-in and
its refusals, tenant isolation, and every number on a page equal to `report --json`."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from helpers.admin_session import csrf_from, sign_in
from helpers.campaigns import DAY_MS, NOW, POLICY, TODAY, add_policy
from helpers.campus import build

from backend.core.calendar import day_date
from backend.core.policy.decide import REASONS
from backend.core.tiers import TIERS
from backend.store.models import ApiKey, SimulationRun
from backend.tasks import trials as trial_tasks


def metrics_on(page: str) -> list[dict]:
    """Every element a page marks with data-metric, with its attributes."""
    out = []
    for tag in re.findall(r"<[a-z]+\b[^>]*\bdata-metric=[^>]*>", page):
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', tag))
        out.append({k.removeprefix("data-"): unescape(v) for k, v in attrs.items()})
    return out


def number(text: str):
    return None if text == "None" else float(text)


def report_json(app, *args) -> dict:
    result = app.test_cli_runner().invoke(args=["report", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# Sign-in and its refusals -------------------------------------------------------------------


def test_pages_need_a_session_and_send_you_to_sign_in(client, tenant):
    for path in ("/admin/", "/admin/policies", "/admin/simulations", "/admin/users"):
        resp = client.get(path)
        assert resp.status_code == 302 and "/admin/login" in resp.headers["Location"], path
    resp = client.get("/admin/simulations/1/status")
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "signed_out"


def test_the_api_key_opens_the_dashboard(client, tenant):
    resp = sign_in(client, tenant.api_key)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/admin/")
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "概览" in page.get_data(as_text=True)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie


@pytest.mark.parametrize(
    "key",
    ["hl_00000000_wrong", "not-a-key", "' OR 1=1 --", "hl_" + "x" * 5000],
)
def test_a_wrong_key_is_refused_and_opens_nothing(client, tenant, key):
    resp = sign_in(client, key)
    assert resp.status_code == 401
    assert "密钥或密码不正确" in resp.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302


def test_a_form_without_its_csrf_token_is_refused(client, tenant):
    resp = client.post("/admin/login", data={"api_key": tenant.api_key})
    assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302  # not signed in
    sign_in(client, tenant.api_key)
    add_policy(client, tenant, POLICY)
    for path, data in (
        ("/admin/logout", {}),
        ("/admin/policies/comeback/check", {"source": POLICY}),
        ("/admin/simulations", {"policy": "preset:tiered"}),
    ):
        for token in (None, "forged-token"):
            body = dict(data, **({"csrf_token": token} if token else {}))
            resp = client.post(path, data=body)
            assert resp.status_code == 400, (path, token)
    assert client.get("/admin/").status_code == 200  # still signed in: logout was refused
    with client.application.app_context():
        assert SimulationRun.select().count() == 0  # nothing was started


def test_the_dashboard_password_set_by_command_opens_it(app, client, tenant):
    runner = app.test_cli_runner()
    short = runner.invoke(
        args=["set-dashboard-password", "--tenant", tenant.appid], input="short\nshort\n"
    )
    assert short.exit_code != 0 and "at least 10" in short.output
    ok = runner.invoke(
        args=["set-dashboard-password", "--tenant", tenant.appid],
        input="食堂的密码 correct horse\n食堂的密码 correct horse\n",
    )
    assert ok.exit_code == 0, ok.output

    def password_sign_in(appid, password):
        token = csrf_from(client.get("/admin/login").get_data(as_text=True))
        return client.post(
            "/admin/login", data={"appid": appid, "password": password, "csrf_token": token}
        )

    assert password_sign_in(tenant.appid, "wrong password!!").status_code == 401
    assert password_sign_in("wx-no-such-app", "食堂的密码 correct horse").status_code == 401
    assert password_sign_in(tenant.appid, "食堂的密码 correct horse").status_code == 302
    assert client.get("/admin/").status_code == 200
    # A new password ends the sessions made with the old one.
    runner.invoke(
        args=["set-dashboard-password", "--tenant", tenant.appid],
        input="another password 2\nanother password 2\n",
    )
    assert client.get("/admin/").status_code == 302


def test_sessions_expire_and_die_with_their_key(app, client, tenant, clock):
    sign_in(client, tenant.api_key)
    assert client.get("/admin/").status_code == 200
    clock.advance(seconds=app.config["DASHBOARD_SESSION_TTL_S"] + 1)
    assert client.get("/admin/").status_code == 302
    sign_in(client, tenant.api_key)
    assert client.get("/admin/").status_code == 200
    with app.app_context():
        ApiKey.update(revoked_ms=NOW).where(ApiKey.tenant == tenant.id).execute()
    assert client.get("/admin/").status_code == 302


def test_a_tampered_session_cookie_is_not_a_session(app, client, tenant, other_tenant):
    from itsdangerous import URLSafeTimedSerializer

    # A cookie naming the other tenant, signed with the wrong key, is ignored.
    forged = URLSafeTimedSerializer("not-the-secret", salt="cookie-session").dumps(
        {"dash": {"t": other_tenant.id, "via": ["key", "x"], "iat": NOW // 1000}}
    )
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], forged)
    assert client.get("/admin/").status_code == 302


def test_sign_in_goes_back_only_into_the_dashboard(client, tenant):
    token = csrf_from(client.get("/admin/login").get_data(as_text=True))
    for target, expected in (
        ("/admin/policies", "/admin/policies"),
        ("https://evil.example/", "/admin/"),
        ("//evil.example/admin", "/admin/"),
    ):
        client.post("/admin/logout", data={"csrf_token": token})
        token = csrf_from(client.get("/admin/login").get_data(as_text=True))
        resp = client.post(
            "/admin/login", data={"api_key": tenant.api_key, "csrf_token": token, "next": target}
        )
        assert resp.headers["Location"].endswith(expected), target
        token = csrf_from(client.get("/admin/policies").get_data(as_text=True))


# Tenant isolation ---------------------------------------------------------------------------


def test_another_tenants_data_never_shows(app, client, tenant, other_tenant, clock):
    build(app, client, tenant, clock, users=40)
    other_policy = POLICY.replace("name: comeback", "name: theirs_only")
    add_policy(client, other_tenant, other_policy)
    events = [
        {"user": f"zz-other-{u}", "id": f"o{u}", "type": "app_open", "ts": NOW - 5 * DAY_MS}
        for u in range(5)
    ]
    client.post("/admin/v1/events/import", json={"events": events}, headers=other_tenant.admin)
    with app.app_context():
        theirs = SimulationRun.create(
            tenant=other_tenant.id,
            created_ms=NOW,
            updated_ms=NOW,
            status="done",
            request=json.dumps(
                {"policies": [{"name": "theirs_only"}], "users": 100, "days": 7, "seed": 0}
            ),
            result="{}",
            report_html="<p>their secret report</p>",
        )
    sign_in(client, tenant.api_key)
    for path in ("/admin/", "/admin/policies", "/admin/simulations", "/admin/policies/comeback"):
        page = client.get(path).get_data(as_text=True)
        assert "theirs_only" not in page and "zz-other" not in page, path
    assert client.get("/admin/policies/theirs_only").status_code == 404
    assert client.get("/admin/users?openid=zz-other-1").status_code == 404
    assert client.get(f"/admin/simulations/{theirs.id}").status_code == 404
    assert client.get(f"/admin/simulations/{theirs.id}/report").status_code == 404
    assert client.get(f"/admin/simulations/{theirs.id}/status").status_code == 404
    assert client.get("/admin/?policy=theirs_only").status_code == 404


# Numbers agree with the report ------------------------------------------------------------


def _check_policy_rows(page: str, report: dict) -> int:
    """Every policy metric on the page equals the report's; returns how many were checked."""
    by_policy = {p["policy"]: p for p in report["policies"]}
    spend = {s["policy"]: s for s in report["spend"]}
    paths = {
        "treated_users": ("treated_users",),
        "holdout_users": ("holdout_users",),
        "lapsed_users": ("lapsed_users",),
        "holdout_lapsed_users": ("holdout_lapsed_users",),
        "recall_rate": ("recall_rate", "rate"),
        "holdout_recall_rate": ("holdout_recall_rate", "rate"),
        "incremental_recall": ("incremental_recall", "diff"),
        "active_users": ("active_users",),
        "holdout_active_users": ("holdout_active_users",),
        "retention_active": ("retention_active", "rate"),
        "holdout_retention_active": ("holdout_retention_active", "rate"),
        "incremental_retention_active": ("incremental_retention_active", "diff"),
        "retention_d30": ("retention_d30", "rate"),
        "revenue_fen": ("money", "revenue_fen"),
        "coupon_cost_fen": ("money", "coupon_cost_fen"),
        "message_cost_fen": ("money", "message_cost_fen"),
        "roi": ("money", "roi"),
        "incremental_revenue_per_user_fen": ("incremental_revenue_per_user_fen", "diff"),
    }
    checked = 0
    rows = re.findall(r'<tr data-policy="([^"]+)">(.*?)</tr>', page, flags=re.S)
    assert rows, "no policy rows on the page"
    for name, row in rows:
        for m in metrics_on(row):
            if m["metric"] in paths:
                value = by_policy[name]
                for key in paths[m["metric"]]:
                    value = value[key]
            elif m["metric"] == "sends":
                value = sum(d["sends"] for d in spend[name]["days"])
            else:
                value = spend[name][m["metric"]]
            if value is None:
                assert m["value"] == "None", (name, m)
            else:
                assert number(m["value"]) == pytest.approx(value, rel=1e-12), (name, m)
            if m["metric"].startswith("incremental_") and "lo" in m:
                diff = by_policy[name][m["metric"]]
                for end in ("lo", "hi"):
                    if diff[end] is None:
                        assert m[end] == "None", (name, m)
                    else:
                        assert number(m[end]) == pytest.approx(diff[end]), (name, m)
            checked += 1
    return checked


# One policy: 18 measures (recall among the lapsed and retention of the active, each with
# its n and the holdout's beside it), and 3 spend figures.
OVERVIEW_NUMBERS = 18 + 3


def figures_on(page: str) -> dict:
    found = re.findall(r'data-chart="([^"]+)" data-figure="([^"]+)"', page)
    return {name: json.loads(unescape(fig)) for name, fig in found}


def test_every_number_on_the_overview_is_the_reports(app, client, tenant, clock):
    build(app, client, tenant, clock)
    sign_in(client, tenant.api_key)
    page = client.get("/admin/").get_data(as_text=True)
    report = report_json(app)
    p = report["policies"][0]
    # The campus has both cohorts, so recall and active retention are real numbers.
    assert p["treated_users"] > 0 and p["lapsed_users"] > 0 and p["holdout_lapsed_users"] > 0
    assert p["active_users"] > 0 and p["holdout_active_users"] > 0
    assert p["recall_rate"]["rate"] is not None and p["retention_active"]["rate"] is not None
    assert p["lapsed_users"] + p["active_users"] == p["treated_users"]
    assert _check_policy_rows(page, report) == OVERVIEW_NUMBERS
    # The text shows the same numbers the attributes carry, rates with their n.
    for rate, n in (
        ("recall_rate", "lapsed_users"),
        ("holdout_recall_rate", "holdout_lapsed_users"),
        ("retention_active", "active_users"),
        ("holdout_retention_active", "holdout_active_users"),
    ):
        cell = re.search(rf'<td data-metric="{rate}"[^>]*>(.*?)</td>', page, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", cell.group(1))
        assert f"{100 * p[rate]['rate']:.1f}%" in text and f"n={p[n]}" in text, rate
    assert "流失用户召回率" in page and "活跃用户留存" in page
    assert f"¥{p['money']['revenue_fen'] / 100:,.2f}" in page
    # What the report cannot compute reads 未知 (no recalled user has a D30 yet; nothing cost).
    assert p["retention_d30"]["rate"] is None and p["money"]["roi"] is None
    for metric in ("retention_d30", "roi"):
        cell = re.search(rf'<td data-metric="{metric}"[^>]*>(.*?)</td>', page, flags=re.S)
        assert cell.group(1).startswith("未知"), metric
    # Tiers today: the scores summary the API gives.
    summary = client.get("/admin/v1/scores/summary", headers=tenant.admin).get_json()
    tiers = {m["tier"]: int(m["value"]) for m in metrics_on(page) if m["metric"] == "tier"}
    assert tiers == summary["tiers"]
    # The charts carry the same figures, each bar named with its n.
    figures = figures_on(page)
    recall = figures["recall"]["data"][0]
    assert recall["y"] == [p["recall_rate"]["rate"], p["holdout_recall_rate"]["rate"]]
    assert recall["x"] == [
        f"comeback·策略组（n={p['lapsed_users']}）",
        f"comeback·对照组（n={p['holdout_lapsed_users']}）",
    ]
    active = figures["retention_active"]["data"][0]["y"]
    assert active == [p["retention_active"]["rate"], p["holdout_retention_active"]["rate"]]
    uplift = figures["uplift"]["data"][0]["y"]
    assert uplift == [p["incremental_recall"]["diff"]]
    tier_bars = figures["tiers_today"]["data"][0]["y"]
    assert tier_bars == [summary["tiers"][t] for t in TIERS]


def test_a_policy_with_no_lapsed_users_shows_its_recall_as_unknown(app, client, tenant, clock):
    """Everyone decided was still active: recall is unknown (None in the report), shown as
    未知 in the table and the charts, never as 0; active users' retention is still shown."""
    build(app, client, tenant, clock, lapsed=0)
    sign_in(client, tenant.api_key)
    resp = client.get("/admin/")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    report = report_json(app)
    p = report["policies"][0]
    assert p["lapsed_users"] == 0 and p["recall_rate"]["rate"] is None
    assert p["retention_active"]["rate"] is not None
    assert _check_policy_rows(page, report) == OVERVIEW_NUMBERS
    for metric in ("recall_rate", "holdout_recall_rate", "incremental_recall"):
        cell = re.search(rf'<td data-metric="{metric}"[^>]*>(.*?)</td>', page, flags=re.S)
        assert cell.group(1).startswith("未知"), metric
    assert f"{100 * p['retention_active']['rate']:.1f}%" in page
    figures = figures_on(page)
    recall = figures["recall"]
    assert recall["data"][0]["y"] == [None, None]  # no bar at 0
    assert recall["data"][0]["text"] == ["未知", "未知"]
    assert [a["text"] for a in recall["layout"]["annotations"]] == ["未知", "未知"]
    uplift = figures["uplift"]
    assert uplift["data"][0]["y"] == [None]
    assert [a["text"] for a in uplift["layout"]["annotations"]] == ["未知"]
    assert "annotations" not in figures["retention_active"]["layout"]
    power = re.search(r'data-power="comeback">(.*?)</p>', page, flags=re.S).group(1)
    assert "召回率提升未知" in power


def test_a_filtered_overview_is_the_filtered_report(app, client, tenant, clock):
    build(app, client, tenant, clock)
    sign_in(client, tenant.api_key)
    day = day_date(TODAY).isoformat()
    query = {"policy": "comeback", "from": day, "to": day}
    page = client.get("/admin/", query_string=query).get_data(as_text=True)
    report = report_json(app, "--policy", "comeback", "--from", day, "--to", day)
    assert _check_policy_rows(page, report) == OVERVIEW_NUMBERS
    # A filter on a day with nothing decided shows nothing, as the report does.
    empty_day = day_date(TODAY + 3).isoformat()
    page = client.get("/admin/", query_string={"from": empty_day, "to": empty_day})
    assert 'data-metric="recall_rate"' not in page.get_data(as_text=True)
    bad = client.get("/admin/", query_string={"from": "2026-03-09", "to": "2026-03-01"})
    assert bad.status_code == 400 and "from is after to" in bad.get_data(as_text=True)


def test_the_policy_page_shows_its_ledger_and_arms(app, client, tenant, clock):
    build(app, client, tenant, clock)
    sign_in(client, tenant.api_key)
    page = client.get("/admin/policies/comeback").get_data(as_text=True)
    report = report_json(app, "--policy", "comeback")
    p = report["policies"][0]
    marked = {m["metric"]: m for m in metrics_on(page)}
    for metric in ("recall_rate", "holdout_recall_rate", "retention_active"):
        assert number(marked[metric]["value"]) == pytest.approx(p[metric]["rate"]), metric
    assert f"（n={p['lapsed_users']}）" in page and f"（n={p['active_users']}）" in page
    ledger = report["ledger"]
    for row in ledger:
        cells = re.search(rf'<tr data-date="{row["date"]}">(.*?)</tr>', page, flags=re.S)
        numbers = re.findall(r"<td>(\d+)</td>", cells.group(1))
        assert numbers[:6] == [
            str(row[k])
            for k in ("decided", "sent", "held_out", "queued", "expired", "quiet_hours_deferred")
        ]
    guard = {m["reason"]: int(m["value"]) for m in metrics_on(page) if m["metric"] == "guard"}
    for reason in {r for row in ledger for r in row["skipped"]}:
        assert guard[reason] == sum(row["skipped"].get(reason, 0) for row in ledger)
    figures = dict(re.findall(r'data-chart="([^"]+)" data-figure="([^"]+)"', page))
    shares = json.loads(unescape(figures["shares"]))["data"]
    assert [t["name"] for t in shares] == ["care"]
    assert shares[0]["y"] == [row["sends_by_arm"].get("care", 0) for row in ledger]
    assert "u0" in page  # recent touches name their users


def test_an_edited_policy_is_validated_and_dry_run_without_saving(app, client, tenant, clock):
    build(app, client, tenant, clock)
    sign_in(client, tenant.api_key)
    token = csrf_from(client.get("/admin/policies/comeback").get_data(as_text=True))
    broken = POLICY.replace("holdout_share: 0.3", "holdout_share: 3")
    resp = client.post(
        "/admin/policies/comeback/check",
        data={"source": broken, "csrf_token": token, "action": "validate"},
    )
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "校验未通过" in text and "holdout_share" in text
    edited = POLICY.replace("holdout_share: 0.3", "holdout_share: 0.5")
    resp = client.post(
        "/admin/policies/comeback/check",
        data={"source": edited, "csrf_token": token, "action": "dry_run"},
    )
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "校验通过" in text
    shown = int(re.search(r'data-metric="preview_send">(\d+)<', text).group(1))
    with app.app_context():
        from backend.services import policies
        from backend.services.campaigns.preview import preview

        row = policies.get(tenant.id, "comeback")
        expected = preview(row, policies.parse(edited), TODAY + 8, clock.now_ms())
        assert row.source == POLICY  # nothing saved
    assert shown == expected["send"]
    assert "holdout_share: 0.5" in text  # the edit stays in the box


def test_user_lookup_shows_tier_reasons_touches_and_consent(app, client, tenant, clock):
    info = build(app, client, tenant, clock)
    openid = info["back"][0]
    sign_in(client, tenant.api_key)
    page = client.get("/admin/users", query_string={"openid": openid}).get_data(as_text=True)
    scores = client.get(f"/admin/v1/users/{openid}/scores", headers=tenant.admin).get_json()
    marked = {m["metric"]: m for m in metrics_on(page)}
    assert marked["tier"]["value"] == scores["tier"]
    assert "分层「" in page  # the reasons, in Chinese
    touches = client.get(f"/admin/v1/users/{openid}/touches", headers=tenant.admin).get_json()
    assert page.count("<td>comeback</td>") == len(touches["touches"]) > 0
    assert "营销消息：<b>接收</b>" in page
    missing = client.get("/admin/users", query_string={"openid": "<script>alert(1)</script>"})
    assert missing.status_code == 404
    assert "<script>alert(1)</script>" not in missing.get_data(as_text=True)


def test_every_guard_reason_has_a_chinese_label():
    from backend.web.dashboard.labels import GUARD_ZH

    assert set(REASONS[1:]) <= set(GUARD_ZH)


# Simulations (the worker itself runs in the browser tests) ------------------------------------


def test_a_simulation_request_is_checked_before_anything_starts(app, client, tenant):
    sign_in(client, tenant.api_key)
    token = csrf_from(client.get("/admin/simulations").get_data(as_text=True))
    for data, message in (
        ({"policy": "preset:tiered", "users": "99999"}, "users must be between"),
        ({"policy": "preset:tiered", "days": "ten"}, "days must be a whole number"),
        ({"policy": "preset:tiered", "replicates": "11"}, "replicates must be between 1 and 10"),
        ({"policy": "preset:nope"}, "choose a policy"),
        ({"policy": "saved:missing"}, "missing"),
    ):
        resp = client.post("/admin/simulations", data={**data, "csrf_token": token})
        assert resp.status_code in (400, 404), data
        assert message in resp.get_data(as_text=True), data
    bad_file = (b"name: x\narms: [oops", "bad.yaml")
    import io

    resp = client.post(
        "/admin/simulations",
        data={"csrf_token": token, "policy_file": (io.BytesIO(bad_file[0]), bad_file[1])},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400 and "line" in resp.get_data(as_text=True)
    big = io.BytesIO(b"#" * (70 * 1024))
    resp = client.post(
        "/admin/simulations",
        data={"csrf_token": token, "policy_file": (big, "big.yaml")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 413
    with app.app_context():
        assert SimulationRun.select().count() == 0


def test_too_many_running_trials_are_refused(app, client, tenant, clock):
    from backend.services import simulations

    with app.app_context():
        for _ in range(simulations.MAX_RUNNING_PER_TENANT):
            simulations.start(
                tenant.id,
                {"policies": [{"name": "tiered"}], "users": 100, "days": 7, "seed": 0},
                clock.now_ms(),
            )
    sign_in(client, tenant.api_key)
    token = csrf_from(client.get("/admin/simulations").get_data(as_text=True))
    resp = client.post("/admin/simulations", data={"policy": "preset:tiered", "csrf_token": token})
    assert resp.status_code == 429 and "still running" in resp.get_data(as_text=True)
    # A worker that stopped reporting long ago no longer counts (and shows as stalled).
    clock.advance(seconds=simulations.STALLED_AFTER_MS // 1000 + 1)
    status = client.get("/admin/simulations/1/status").get_json()
    assert status["status"] == "stalled"


def test_too_many_wrong_sign_ins_from_one_address_are_refused_for_a_while(client, tenant, clock):
    from backend.web.dashboard.session import FAILED_WINDOW_MS, MAX_FAILED_SIGN_INS

    for _ in range(MAX_FAILED_SIGN_INS):
        assert sign_in(client, "hl_00000000_guess").status_code == 401
    # Now even the right key waits: the address has used up its guesses.
    resp = sign_in(client, tenant.api_key)
    assert resp.status_code == 429 and "尝试次数过多" in resp.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302
    clock.advance(seconds=FAILED_WINDOW_MS // 1000 + 1)
    assert sign_in(client, tenant.api_key).status_code == 302


def test_an_edited_policy_goes_to_the_simulator_as_edited(app, client, tenant, monkeypatch):
    """The policy page's third button sends the text in the editor, unsaved, to a trial
    against the presets. (The worker itself runs in the browser tests.)"""

    started = []
    monkeypatch.setattr(trial_tasks, "queue_trial", lambda *a: started.append(a[-1]))
    add_policy(client, tenant, POLICY)
    sign_in(client, tenant.api_key)
    page = client.get("/admin/policies/comeback").get_data(as_text=True)
    assert 'formaction="/admin/simulations"' in page
    edited = POLICY.replace("holdout_share: 0.3", "holdout_share: 0.2")
    resp = client.post("/admin/simulations", data={"source": edited, "csrf_token": csrf_from(page)})
    assert resp.status_code == 302 and started, resp.get_data(as_text=True)[-1500:]
    with app.app_context():
        run = SimulationRun.get_by_id(started[0])
        request = json.loads(run.request)
    assert [p["name"] for p in request["policies"]] == [
        "comeback",
        "coupon_blast",
        "tiered",
        "golden_window",
    ]
    assert request["policies"][0]["source"] == edited
    with app.app_context():
        from backend.services import policies

        assert policies.get(tenant.id, "comeback").source == POLICY  # nothing saved
    bad = client.post(
        "/admin/simulations", data={"source": "name: x\narms: [", "csrf_token": csrf_from(page)}
    )
    assert bad.status_code == 400 and len(started) == 1


def test_who_slipped_this_week_is_counted_from_the_nightly_scores(app, client, tenant, clock):
    build(app, client, tenant, clock)
    from backend.store.models import ScoreSnapshot, User

    with app.app_context():
        days = sorted({d for (d,) in ScoreSnapshot.select(ScoreSnapshot.day).tuples()})
        assert days[-1] - days[0] >= 7
        rank = {t: i for i, t in enumerate(TIERS)}

        def tiers_on(day):
            q = ScoreSnapshot.select(User.openid, ScoreSnapshot.tier).join(User)
            return dict(q.where(ScoreSnapshot.day == day).tuples())

        before, now = tiers_on(days[0]), tiers_on(days[-1])
    worse = {o for o, t in now.items() if before[o] != "new" and rank[t] > rank[before[o]]}
    assert worse  # the campus's users slipped from low frequency to churn risk
    sign_in(client, tenant.api_key)
    page = client.get("/admin/").get_data(as_text=True)
    shown = re.findall(r'<table class="lapsed">(.*?)</table>', page, flags=re.S)[0]
    assert int(re.search(r'data-metric="lapsed">(\d+)<', page).group(1)) == len(worse)
    listed = set(re.findall(r"openid=([^\"&]+)", shown))
    assert listed <= worse and len(listed) == min(len(worse), 20)


def test_the_trial_worker_runs_a_comparison_into_its_row(app, client, tenant, clock):
    """`run-simulation ID` (what the page starts in the background), here in-process: the
    comparison, the report page and the progress land in the row; a second start is refused."""
    from backend.services import simulations

    request = {
        "policies": [{"name": "tiered", "source": None}, {"name": "coupon_blast", "source": None}],
        "users": 150,
        "days": 7,
        "seed": 3,
        "warmup": 14,
        "day": TODAY,
    }
    with app.app_context():
        run = simulations.start(tenant.id, request, clock.now_ms())
    result = app.test_cli_runner().invoke(args=["run-simulation", str(run.id)])
    assert result.exit_code == 0, result.output
    sign_in(client, tenant.api_key)
    status = client.get(f"/admin/simulations/{run.id}/status").get_json()
    assert status["status"] == "done" and status["progress"] == 1.0
    assert sorted(r["policy"] for r in status["ranking"]) == ["coupon_blast", "tiered"]
    assert status["twin"]["source"] == "defaults"  # no history to calibrate from: said so
    report = client.get(f"/admin/simulations/{run.id}/report")
    page = report.get_data(as_text=True)
    assert report.status_code == 200 and page.count('class="chart"') == 12
    assert '<script src="/admin/assets/plotly.min.js">' in page
    assert "script-src 'self'" in report.headers["Content-Security-Policy"]
    again = app.test_cli_runner().invoke(args=["run-simulation", str(run.id)])
    assert again.exit_code != 0 and "not waiting to run" in again.output


@pytest.mark.slow
def test_the_trial_page_leads_with_a_months_verdict_and_the_power_warnings(
    app, client, tenant, clock
):
    """The finished trial's page: the verdict a month (said how it was scaled), the size and
    the smallest difference it resolves, every pair, each policy's description, money spent
    beside committed and incremental beside gross, each rate with its n, and the warning of
    every policy whose own holdout cannot detect its predicted effect."""
    from backend.services import simulations

    request = {
        "policies": [{"name": "tiered", "source": None}, {"name": "golden_window", "source": None}],
        "users": 200,
        "days": 10,
        "seed": 1,
        "replicates": 2,
        "warmup": 14,
        "day": TODAY,
    }
    with app.app_context():
        run = simulations.start(tenant.id, request, clock.now_ms())
    result = app.test_cli_runner().invoke(args=["run-simulation", str(run.id)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        out = json.loads(SimulationRun.get_by_id(run.id).result)
    assert out["config"]["replicates"] == 2 and out["config"]["seeds"] == [1, 2]
    sign_in(client, tenant.api_key)
    page = unescape(client.get(f"/admin/simulations/{run.id}").get_data(as_text=True))
    best = out["ranking"][0]
    month = best["per_month"]["students"]["value"]
    assert f"每月约多召回 {round(month)} 名学生" in page
    assert "每月 = 10 天试验的效果 × 30/10" in page
    assert "200 名模拟学生 × 10 天 × 2 轮" in page and "这个规模下能分辨的最小差异：每月" in page
    shown = re.search(r'<tr data-policy="tiered">(.*?)</tr>', page).group(1)
    tiered = next(r for r in out["ranking"] if r["policy"] == "tiered")
    profit = tiered["per_month"]["profit"]["value"]
    sign = "+" if profit >= 0 else "-"
    assert f'<td class="month-profit">{sign}¥{abs(profit) / 100:,.0f}（' in shown
    assert re.search(r'<table id="pairs">.*?</table>', page, re.S).group(0).count("<tr>") == 2
    for r in out["ranking"]:
        assert load_description(r["policy"]) in page
        h = r["holdout"]
        assert f"（n={h['holdout_users']:,}）" in page  # the holdout's rate with its n
    warned = [r["policy"] for r in out["ranking"] if r["warning"]]
    assert warned  # 200 students: no holdout can detect its policy's predicted effect
    warnings = re.search(r'<div id="power-warnings">(.*?)</div>', page, re.S).group(1)
    for name in warned:
        assert out["warnings_zh"][name] in warnings and "测不出它的预期效果" in warnings
    for label in ("实际花费", "已发券面值（承诺）", "毛收入", "增量收入", "对照组功效"):
        assert label in page


def load_description(name: str) -> str:
    from simulator.run import load_policy

    return load_policy(name).description


def test_the_default_trial_is_sized_by_the_rule_and_says_why(app, client, tenant, monkeypatch):
    from backend.web.dashboard import trials

    size = trials.default_size()
    assert size.decisive  # the presets (and the merchant's policy) get a decisive verdict
    sign_in(client, tenant.api_key)
    page = unescape(client.get("/admin/simulations").get_data(as_text=True))
    assert f'name="users" value="{size.users}"' in page
    assert f'name="days" value="{size.days}"' in page
    assert f'name="replicates" value="{size.replicates}"' in page
    least = f"¥{size.min_detectable_month_fen / 100:,.0f}"
    assert f"这个规模下能分辨的最小差异约为每月 {least}" in page
    assert f"每月利润约相差 ¥{size.gap_month_fen / 100:,.0f}" in page
    # A request without a size gets the default size.
    started = []
    monkeypatch.setattr(trial_tasks, "queue_trial", lambda *a: started.append(a[-1]))
    resp = client.post(
        "/admin/simulations", data={"policy": "preset:tiered", "csrf_token": csrf_from(page)}
    )
    assert resp.status_code == 302 and started
    with app.app_context():
        request = json.loads(SimulationRun.get_by_id(started[0]).request)
    assert (request["users"], request["days"], request["replicates"]) == (
        size.users,
        size.days,
        size.replicates,
    )
