"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against the
app served over HTTP. Screenshots go to artifacts/screenshots/ (kept by CI as artefacts).

`.ci/run` installs chromium; on a laptop without it these tests are skipped, under CI they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from helpers.app import T0, build_app, close_app, make_tenant
from helpers.campaigns import POLICY, add_policy
from helpers.campus import build
from werkzeug.serving import make_server

from backend.core.clock import FixedClock

SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SIMULATION_TIMEOUT_MS = 240_000


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {why}: the browser tests must run")
        pytest.skip(why)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One campus (tenant A with a week of history, tenant B with a policy and a trial of its
    own) served on a free port for the whole module."""
    folder = tmp_path_factory.mktemp("dashboard")
    clock = FixedClock(T0)
    app = build_app(f"sqlite:///{folder / 'huiliu.sqlite3'}", clock)
    client = app.test_client()
    a = make_tenant(app, "wxbrowser000000001")
    b = make_tenant(app, "wxbrowser000000002")
    build(app, client, a, clock, users=60)
    add_policy(client, b, POLICY.replace("name: comeback", "name: b_private_policy"))
    with app.app_context():
        from backend.services import simulations

        theirs = simulations.start(
            b.id,
            {"policies": [{"name": "b_private_policy"}], "users": 100, "days": 7, "seed": 0},
            clock.now_ms(),
        )
    report = app.test_cli_runner().invoke(args=["report", "--json", "--tenant", a.appid])
    assert report.exit_code == 0, report.output
    comeback = json.loads(report.output)["policies"][0]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {
        "base": f"http://127.0.0.1:{server.server_port}",
        "a": a,
        "b": b,
        "b_run": theirs.id,
        "app": app,
        "report": comeback,
    }
    server.shutdown()
    close_app(app)


@pytest.fixture(scope="module")
def browser():
    _need(CHROMIUM is not None, "Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    """A fresh browser context; records every request and every console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.requests = []
    page.errors = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page, served, key: str | None = None) -> None:
    page.goto(served["base"] + "/admin/")
    assert "/admin/login" in page.url  # signed out: sent to the sign-in page
    page.fill("#login-key input[name=api_key]", key or served["a"].api_key)
    page.click("#login-key button")
    page.wait_for_load_state("networkidle")


def charts_drawn(page_or_frame) -> int:
    """Waits until every chart on the page has been drawn by plotly; returns how many."""
    charts = page_or_frame.locator("[data-figure]")
    count = charts.count()
    for i in range(count):
        charts.nth(i).locator(".main-svg").first.wait_for(timeout=20_000)
    assert page_or_frame.locator("[data-figure][data-drawn]").count() == count
    return count


def only_local(page, served) -> None:
    """Nothing was fetched from anywhere but the app itself (no CDN: works on a campus LAN)."""
    outside = [u for u in page.requests if not u.startswith((served["base"], "data:", "about:"))]
    assert outside == []


def test_sign_in_and_see_the_overview_with_its_charts(page, served):
    sign_in(page, served)
    assert page.url.rstrip("/").endswith("/admin")
    assert page.locator("h1").first.inner_text() == "概览"
    # tiers today and over time, recall among the lapsed, its uplift, active users' retention,
    # revenue, spend (D30 retention only once a recalled user has one)
    assert charts_drawn(page) >= 7
    row = page.locator('tr[data-policy="comeback"]')
    recall, n = row.locator('td[data-metric="recall_rate"]').inner_text().split("\n")
    assert recall.endswith("%") and n == f"n={served['report']['lapsed_users']}"
    active, n = row.locator('td[data-metric="retention_active"]').inner_text().split("\n")
    assert active.endswith("%") and n == f"n={served['report']['active_users']}"
    assert row.locator('td[data-metric="retention_d30"]').inner_text().startswith("未知")
    shot(page, "overview")
    assert page.errors == []
    only_local(page, served)


def test_open_a_policy_and_dry_run_an_edit(page, served):
    sign_in(page, served)
    page.click("text=策略")
    page.click("a:text-is('comeback')")
    page.wait_for_load_state("networkidle")
    assert "策略 comeback" in page.locator("h1").inner_text()
    assert charts_drawn(page) == 2  # bandit shares, guard rails
    assert page.locator("table.ledger tr[data-date]").count() >= 2
    text = page.locator("textarea[name=source]")
    text.fill(text.input_value().replace("holdout_share: 0.3", "holdout_share: 0.5"))
    page.click("button[value=dry_run]")
    page.wait_for_load_state("networkidle")
    assert "校验通过" in page.locator("#check-result").inner_text()
    shot(page, "policy")
    assert page.errors == []
    text = page.locator("textarea[name=source]")
    text.fill("name: broken\narms: [")
    page.click("button[value=validate]")
    page.wait_for_load_state("networkidle")
    assert "校验未通过" in page.locator("#check-result").inner_text()  # answered with a 400


@pytest.mark.slow
def test_start_a_small_simulation_and_watch_its_result_appear(page, served):
    sign_in(page, served)
    page.click("text=模拟试验")
    page.select_option("select[name=policy]", "saved:comeback")
    page.fill("input[name=users]", "200")
    page.fill("input[name=days]", "14")
    page.click("#start-simulation button")
    page.wait_for_url("**/admin/simulations/*")
    assert page.locator("#run-progress").is_visible()
    shot(page, "simulation-running")
    page.wait_for_selector("#report[src]", timeout=SIMULATION_TIMEOUT_MS)
    assert page.locator("#run-status").inner_text() == "已完成"
    ranking = page.locator("#ranking tr").all_inner_texts()
    assert len(ranking) == 1 + 4  # header, comeback and the three presets
    assert any("comeback" in row for row in ranking)
    assert "每月约多召回" in page.locator("#verdict").inner_text()  # a month, in Chinese
    assert "这个规模下能分辨的最小差异" in page.locator("#trial-size").inner_text()
    assert page.locator("#pairs tr").count() == 1 + 6  # every pair of the four policies
    # 200 students: the holdouts are far too small for the predicted effects, and it says so
    assert "测不出它的预期效果" in page.locator("#power-warnings").inner_text()
    report = page.frame_locator("#report")
    report.locator("h1").wait_for()
    assert charts_drawn(report) == 6 * 4  # the simulator's six charts for each policy
    shot(page, "simulation-done")
    page.click("text=模拟试验")
    assert page.locator("#runs tr").count() == 2  # header and this run, listed as done
    assert "已完成" in page.locator("#runs").inner_text()
    assert page.errors == []
    only_local(page, served)


def test_look_a_user_up(page, served):
    sign_in(page, served)
    page.click("text=用户查询")
    page.fill("input[name=openid]", "u000")
    page.click("form.filter button")
    page.wait_for_load_state("networkidle")
    assert page.locator("#profile h2").inner_text() == "u000"
    assert page.locator("#reasons li").count() >= 3
    assert "分层「" in page.locator("#reasons").inner_text()
    assert page.locator("#user-touches tr").count() >= 2
    assert "营销消息" in page.locator("#consent").inner_text()
    shot(page, "user")


def test_a_wrong_key_is_refused(page, served):
    sign_in(page, served, key="hl_deadbeef_not-the-key")
    assert "/admin/login" in page.url
    assert page.locator(".error").inner_text() == "密钥或密码不正确"
    page.goto(served["base"] + "/admin/")
    assert "/admin/login" in page.url
    shot(page, "refused-wrong-key")


def test_another_tenants_pages_are_not_found(page, served):
    sign_in(page, served)
    resp = page.goto(served["base"] + "/admin/policies/b_private_policy")
    assert resp.status == 404
    assert "无法完成请求（404）" in page.content() and "data-arm" not in page.content()
    resp = page.goto(served["base"] + f"/admin/simulations/{served['b_run']}")
    assert resp.status == 404 and "b_private_policy" not in page.content()
    page.goto(served["base"] + "/admin/policies")
    assert "b_private_policy" not in page.content()
    shot(page, "refused-other-tenant")


def test_a_form_without_its_csrf_token_is_refused(page, served):
    sign_in(page, served)
    page.goto(served["base"] + "/admin/policies/comeback")
    page.evaluate("document.querySelector('#edit input[name=csrf_token]').remove()")
    page.click("button[value=validate]")
    page.wait_for_load_state("networkidle")
    assert "CSRF" in page.locator(".error").inner_text()
    shot(page, "refused-missing-csrf")


def test_the_standalone_simulator_report_draws_offline(browser, served, tmp_path):
    """`simulate --html` writes one file that draws its charts with the network cut off."""
    path = tmp_path / "report.html"
    runner = served["app"].test_cli_runner()
    args = ["simulate", "--policy", "tiered", "--users", "300", "--days", "14"]
    result = runner.invoke(args=[*args, "--html", str(path)])
    assert result.exit_code == 0, result.output
    context = browser.new_context(offline=True)
    page = context.new_page()
    fetched = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(path.as_uri())
    assert charts_drawn(page) == 6
    assert [u for u in fetched if not u.startswith(("file:", "data:"))] == []
    shot(page, "simulator-report-offline")
    context.close()
