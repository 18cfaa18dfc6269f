"""From posted events to a stored daily snapshot, through the CLI and the admin API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
from helpers.app import T0, login

from backend.core import bgnbd
from backend.store.models import ModelFit, ScoreSnapshot

DAY = timedelta(days=1)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def import_events(client, tenant, events):
    for start in range(0, len(events), 2000):
        resp = client.post(
            "/admin/v1/events/import",
            json={"events": events[start : start + 2000]},
            headers=tenant.admin,
        )
        body = resp.get_json()
        assert resp.status_code == 200 and not body["rejected"], body


def history(openid: str, days_ago: list[int], orders_on: list[int] = (), kinds=()) -> list[dict]:
    out = []
    for i, d in enumerate(days_ago):
        out.append(
            {"user": openid, "id": f"{openid}-v{i}", "type": "app_open", "ts": iso(T0 - d * DAY)}
        )
    for i, d in enumerate(orders_on):
        out.append(
            {
                "user": openid,
                "id": f"{openid}-o{i}",
                "type": "order_paid",
                "ts": iso(T0 - d * DAY + timedelta(minutes=5)),
                "props": {
                    "order_id": f"{openid}-{i}",
                    "amount_fen": 2000 + 100 * i,
                    "merchant": "canteen-1",
                },
            }
        )
    for i, (kind, d) in enumerate(kinds):
        out.append({"user": openid, "id": f"{openid}-k{i}", "type": kind, "ts": iso(T0 - d * DAY)})
    return out


def score(app, *args) -> list[dict]:
    result = app.test_cli_runner().invoke(args=["score", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_posted_events_become_a_stored_snapshot_with_reasons(client, tenant, app):
    events = (
        history(
            "daily", list(range(0, 28)), orders_on=[1, 8, 15], kinds=[("invite", 3), ("review", 4)]
        )
        # Last seen just before winter break (2026-01-17 .. 03-01): 54 calendar days ago,
        # but only 10 term days: churn risk, not churned.
        + history("before_break", [54, 60, 61])
        + history("gone", [100, 101])
        + history("weekly", [2, 12, 22])  # 3 visit days in 30: less than weekly
    )
    import_events(client, tenant, events)
    # A brand-new user, seen today through the mini-program itself.
    h = login(client, tenant, "fresh")
    client.post(
        "/mp/v1/events",
        headers=h,
        json={"events": [{"id": "1", "type": "app_open", "ts": iso(T0 - timedelta(hours=1))}]},
    )

    (result,) = score(app)
    assert result["date"] == "2026-03-10"
    assert result["users"] == 5
    with app.app_context():
        rows = {r.user.openid: r for r in ScoreSnapshot.select()}
    assert rows["daily"].tier == "active"
    assert rows["dev_fresh"].tier == "new"
    assert rows["weekly"].tier == "low_frequency"
    assert rows["gone"].tier == "churned"
    before = rows["before_break"]
    assert (before.tier, before.days_since_visit, before.term_days_since_visit) == (
        "churn_risk",
        54,
        10,
    )
    assert rows["daily"].worth_recalling  # invited and reviewed: 2 of 3
    assert rows["daily"].orders_total == 3 and rows["daily"].spend_fen_total == 6300

    summary = client.get("/admin/v1/scores/summary", headers=tenant.admin).get_json()
    assert summary["tiers"] == {
        "new": 1,
        "active": 1,
        "low_frequency": 1,
        "churn_risk": 1,
        "churned": 1,
    }
    assert sum(summary["segments"].values()) == 5
    assert summary["model"] is None  # 1 buyer: too few to fit BG/NBD

    explained = client.get("/admin/v1/users/before_break/scores", headers=tenant.admin).get_json()
    assert explained["tier"] == "churn_risk"
    assert any("10 term days" in r for r in explained["reasons"])
    assert any("44 of the 54 silent days fell in a break" in r for r in explained["reasons"])


def test_scoring_twice_a_day_replaces_not_duplicates(client, tenant, app):
    import_events(client, tenant, history("a", [0, 1]) + history("b", [5]))
    score(app)
    score(app)
    score(app, "--date", "2026-03-09")
    with app.app_context():
        per_day = {
            d: ScoreSnapshot.select().where(ScoreSnapshot.day == d).count()
            for d in {r.day for r in ScoreSnapshot.select()}
        }
    assert sorted(per_day.values()) == [2, 2]
    latest = client.get("/admin/v1/scores/summary", headers=tenant.admin).get_json()
    assert latest["date"] == "2026-03-10"
    earlier = client.get("/admin/v1/scores/summary?date=2026-03-09", headers=tenant.admin)
    assert earlier.get_json()["date"] == "2026-03-09"


def test_bgnbd_is_fitted_when_enough_users_have_bought(client, tenant, app):
    # Purchase histories drawn from BG/NBD itself, so the model is identifiable.
    rng = np.random.default_rng(7)
    n = 200
    first = rng.integers(60, 200, n)  # days ago of each user's first order
    x, t_x = bgnbd.simulate(bgnbd.BgNbdParams(0.5, 5.0, 0.8, 2.5), first.astype(float), rng)
    events = []
    for u in range(n):
        last = int(first[u] - np.floor(t_x[u]))
        middle = rng.integers(last, first[u] + 1, max(int(x[u]) - 1, 0)).tolist()
        days = sorted({int(first[u]), last, *middle}, reverse=True) if x[u] else [int(first[u])]
        events += history(f"buyer{u}", days, orders_on=days)
    import_events(client, tenant, events)
    (result,) = score(app)
    assert result["model"] is not None and result["model"]["n"] == n
    with app.app_context():
        fit = ModelFit.get()
        assert fit.r > 0 and fit.alpha > 0 and fit.a > 0 and fit.b > 0
        p = [r.p_alive for r in ScoreSnapshot.select()]
    assert all(0 <= x <= 1 for x in p)
    one = client.get("/admin/v1/users/buyer0/scores", headers=tenant.admin).get_json()
    assert 0 <= one["p_alive"] <= 1
    assert one["expected_orders"] >= 0


def test_scores_are_per_tenant_and_dates_are_checked(client, tenant, other_tenant, app):
    import_events(client, tenant, history("a", [0]))
    score(app, "--tenant", tenant.appid)
    assert client.get("/admin/v1/scores/summary", headers=other_tenant.admin).status_code == 404
    assert client.get("/admin/v1/users/a/scores", headers=other_tenant.admin).status_code == 404
    bad = client.get("/admin/v1/scores/summary?date=2026-13-01", headers=tenant.admin)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_date"
    future = client.get("/admin/v1/scores/summary?date=2026-03-11", headers=tenant.admin)
    assert future.status_code == 400 and future.get_json()["error"]["code"] == "date_in_future"
    result = app.test_cli_runner().invoke(args=["score", "--tenant", "wxnobody"])
    assert result.exit_code != 0 and "no tenant" in result.output


def test_opted_out_and_erased_users(client, tenant, app):
    """Erased users vanish from later snapshots; opting out does not change a user's tier."""
    import_events(client, tenant, history("dev_alice", [0, 1, 2]))
    h = login(client, tenant, "alice")
    client.post("/mp/v1/me/opt-out", headers=h)
    (first,) = score(app)
    assert first["users"] == 1
    client.delete("/mp/v1/me", headers=h)
    (second,) = score(app)
    assert second["users"] == 0


def test_tier_thresholds_and_calendar_are_per_tenant_settings(client, tenant, other_tenant, app):
    import_events(client, tenant, history("u", [4, 5, 6, 8, 9, 10, 12]))
    score(app)
    assert client.get("/admin/v1/users/u/scores", headers=tenant.admin).get_json()["tier"] == (
        "active"
    )
    resp = client.patch(
        "/admin/v1/settings", json={"tiers": {"risk_silent_days": 3}}, headers=tenant.admin
    )
    assert resp.status_code == 200 and resp.get_json()["tiers"] == {"risk_silent_days": 3}
    score(app)
    assert client.get("/admin/v1/users/u/scores", headers=tenant.admin).get_json()["tier"] == (
        "churn_risk"
    )
    # A break covering the silence puts the user back: silence in a break does not count.
    client.patch(
        "/admin/v1/settings",
        headers=tenant.admin,
        json={
            "calendar": {"breaks": [{"name": "运动会", "from": "2026-03-07", "to": "2026-03-10"}]}
        },
    )
    score(app)
    assert client.get("/admin/v1/users/u/scores", headers=tenant.admin).get_json()["tier"] == (
        "active"
    )
    for bad in (
        {"tiers": {"risk_silent_dayz": 3}},
        {"calendar": "../../etc/passwd"},
        {"calendar": "missing.yaml"},
        {"tiers": {"new_days": -1}},
        {"calendar": {"breaks": [{"from": "2026-03-10", "to": "2026-03-01"}]}},
        {"colour": 1},
    ):
        resp = client.patch("/admin/v1/settings", json=bad, headers=tenant.admin)
        assert resp.status_code == 400, bad
    assert client.get("/admin/v1/settings", headers=other_tenant.admin).get_json() == {}
