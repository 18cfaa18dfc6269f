"""One tenant's failure never costs another tenant its job, nor a phone its event batch.

`run-campaigns` and `score` without --tenant walk every tenant: a tenant whose run raises
(anything, a bad stored policy for one) is recorded as failed with its reason, the others
run, and the command exits non-zero naming the failed tenant. A trigger policy that raises
while an event batch is stored is logged; the batch is still answered 200 and kept.
"""

from __future__ import annotations

import json

import pytest
from helpers.admin_session import sign_in
from helpers.app import login, make_tenant
from helpers.campaigns import (
    NOW,
    POLICY,
    TODAY,
    add_policy,
    decide_only,
    grant,
    import_users,
    is_quiet,
    touches,
)

from backend.core.policy import PolicyError
from backend.services import policies, scoring
from backend.services.campaigns import job, triggers
from backend.services.locks import acquire_lock
from backend.store.models import CampaignRun, Event, JobLock, ScoreSnapshot, Tenant
from backend.store.models import Policy as PolicyRow

BOOM = "this tenant's policy cannot be decided"


@pytest.fixture
def three_tenants(app, client):
    """Three tenants with due users and an active nightly policy; the first (lowest id, so
    walked first) is the one that will fail."""
    out = []
    for n in range(3):
        t = make_tenant(app, f"wxiso00000000{n:03d}")
        openids = [f"i{n}-{u:02d}" for u in range(10)]
        import_users(client, t, openids, silent_days=5, now_ms=NOW)
        grant(app, t, openids)
        add_policy(client, t)
        out.append(t)
    return out


def fail_for(monkeypatch, module, name: str, tenant_id: int) -> None:
    """Make `module.name` raise for one tenant only (its first argument is the tenant)."""
    real = getattr(module, name)

    def patched(tenant, *args, **kwargs):
        tid = tenant if isinstance(tenant, int) else tenant.id
        if tid == tenant_id:
            raise RuntimeError(BOOM)
        return real(tenant, *args, **kwargs)

    monkeypatch.setattr(module, name, patched)


def test_a_failing_tenant_does_not_stop_the_others_nightly_sends(
    app, client, three_tenants, monkeypatch
):
    bad, good1, good2 = three_tenants
    assert not is_quiet(NOW)
    fail_for(monkeypatch, job, "decide_policy", bad.id)
    result = app.test_cli_runner().invoke(args=["run-campaigns", "--json"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["failed"] == [{"tenant": bad.appid, "error": f"RuntimeError: {BOOM}"}]
    ran = {r["tenant"]: r for r in out["tenants"]}
    assert sorted(ran) == sorted([good1.appid, good2.appid])
    for t in (good1, good2):
        assert ran[t.appid]["sent"] == ran[t.appid]["queued"] > 0
        rows = touches(app, t)
        assert sum(r["status"] == "sent" for r in rows) == ran[t.appid]["sent"]
    assert touches(app, bad) == []
    assert bad.appid in result.stderr and BOOM in result.stderr
    with app.app_context():
        runs = {r.tenant_id: r for r in CampaignRun.select()}
        assert runs[bad.id].status == "failed" and runs[bad.id].finished_ms is not None
        assert json.loads(runs[bad.id].summary)["error"] == f"RuntimeError: {BOOM}"
        assert runs[good1.id].status == runs[good2.id].status == "done"
        assert CampaignRun.select().where(CampaignRun.status == "running").count() == 0
        assert JobLock.select().count() == 0  # no lock left held behind

    # The text form says the same; the failed tenant, once mended, runs normally.
    again = app.test_cli_runner().invoke(args=["run-campaigns"])
    assert again.exit_code == 1
    assert f"{bad.appid}: RuntimeError: {BOOM}" in again.stderr
    assert "failed for 1 of 3 tenants" in again.stderr
    monkeypatch.undo()
    mended = app.test_cli_runner().invoke(args=["run-campaigns", "--json"])
    assert mended.exit_code == 0, mended.output
    assert {r["tenant"]: r["sent"] > 0 for r in json.loads(mended.stdout)["tenants"]} == {
        bad.appid: True,
        good1.appid: False,  # already sent last time, nothing twice
        good2.appid: False,
    }


def test_a_locked_tenant_is_reported_and_the_others_run(app, three_tenants):
    locked, good1, good2 = three_tenants
    with app.app_context():
        assert acquire_lock(f"campaigns:{locked.id}", "another-run", NOW)
    result = app.test_cli_runner().invoke(args=["run-campaigns", "--json"])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [f["tenant"] for f in out["failed"]] == [locked.appid]
    assert "holds the lock" in out["failed"][0]["error"]
    assert sorted(r["tenant"] for r in out["tenants"]) == sorted([good1.appid, good2.appid])
    assert "holds the lock" in result.stderr


def test_a_failing_tenant_does_not_stop_the_others_scores(app, three_tenants, monkeypatch):
    bad, good1, good2 = three_tenants
    fail_for(monkeypatch, scoring, "score_tenant", bad.id)
    result = app.test_cli_runner().invoke(args=["score", "--json"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["failed"] == [{"tenant": bad.appid, "error": f"RuntimeError: {BOOM}"}]
    assert sorted(r["tenant"] for r in out["tenants"]) == sorted([good1.appid, good2.appid])
    with app.app_context():
        scored = {s.tenant_id for s in ScoreSnapshot.select().where(ScoreSnapshot.day == TODAY)}
    assert scored == {good1.id, good2.id}
    assert bad.appid in result.stderr and BOOM in result.stderr


STALE = POLICY.replace("name: comeback", "name: stale")
# What an older, laxer parser stored and today's refuses (an unknown field, a mapping of arms).
UNREADABLE = "name: stale\nsurprise: yes\narms: {care: {touches: []}}\n"


@pytest.mark.parametrize("holdout", ["0", "0.3"])
def test_an_unreadable_policy_is_named_and_the_tenants_other_policy_still_runs(
    app, client, tenant, holdout
):
    """A tenant's active policy whose stored source no longer parses: the nightly job skips it
    and names it, decides and delivers the tenant's good policy, and finishes the unreadable
    policy's queued touches as `failed` (`policy_unreadable`) instead of stopping on them.
    With a holdout, its held-out touches are due for attribution too: attribution leaves them
    open (their window is unknown) instead of stopping the run."""
    assert not is_quiet(NOW)
    openids = [f"r{u:02d}" for u in range(12)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2)
    # Decided while it still parsed; no holdout, so nothing of it is measured yet.
    add_policy(client, tenant, STALE.replace("holdout_share: 0.3", f"holdout_share: {holdout}"))
    assert decide_only(app, tenant)["queued"] >= 4
    with app.app_context():
        PolicyRow.update(source=UNREADABLE).where(PolicyRow.name == "stale").execute()
        with pytest.raises(PolicyError):
            policies.loaded(PolicyRow.get(PolicyRow.name == "stale"))
    add_policy(client, tenant)  # comeback: the good one

    result = app.test_cli_runner().invoke(args=["run-campaigns", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    (bad,) = out["policies_unreadable"]
    assert bad["policy"] == "stale" and "surprise" in bad["error"]
    assert list(out["policies"]) == ["comeback"]
    with app.app_context():
        ids = {r.name: r.id for r in PolicyRow.select()}
        run = CampaignRun.select().order_by(CampaignRun.id.desc()).first()
        assert run.status == "done"
        assert json.loads(run.summary)["policies_unreadable"] == [bad]
    rows = touches(app, tenant)
    stale = [r for r in rows if r["policy"] == ids["stale"] and r["status"] != "held_out"]
    held = [r for r in rows if r["policy"] == ids["stale"] and r["status"] == "held_out"]
    assert bool(held) == (holdout != "0") and not any(r["attributed"] for r in held)
    assert stale and {(r["status"], r["reason"]) for r in stale} == {
        ("failed", "policy_unreadable")
    }
    assert all(r["claim_token"] is None and r["lease_until_ms"] is None for r in stale)
    good = [r for r in rows if r["policy"] == ids["comeback"] and r["status"] != "held_out"]
    assert out["queued"] > 0 and out["sent"] == out["queued"]
    assert sum(r["status"] == "sent" for r in good) == out["sent"]
    assert out["failed"] == len(stale)

    # Every reader of the active policies skips it: the nightly and the trigger ones.
    with app.app_context():
        for trigger in (None, False, True):
            names = [r.name for r, _ in policies.active_rows(tenant.id, trigger=trigger)]
            assert names == ([] if trigger else ["comeback"])


def test_an_unreadable_policy_is_a_409_or_named_on_every_page_not_a_500(app, client, tenant):
    """The routes and pages that read one stored policy answer for an unreadable one."""
    add_policy(client, tenant, STALE)
    with app.app_context():
        PolicyRow.update(source=UNREADABLE).where(PolicyRow.name == "stale").execute()
    resp = client.get("/admin/v1/policies/stale/preview", headers=tenant.admin)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "policy_unreadable"
    listed = client.get("/admin/v1/policies", headers=tenant.admin)
    assert listed.status_code == 200 and "surprise" in listed.get_json()["policies"][0]["error"]
    assert sign_in(client, tenant.api_key).status_code == 302
    page = client.get("/admin/policies")
    assert page.status_code == 200 and "无法读取" in page.get_data(as_text=True)
    assert client.get("/admin/policies/stale").status_code == 409


def test_activating_an_unreadable_policy_is_the_same_409_as_its_preview(app, client, tenant):
    """Activate reads the stored source as preview does: unreadable is a 409, not a 400."""
    add_policy(client, tenant, STALE, active=False)
    with app.app_context():
        PolicyRow.update(source=UNREADABLE).where(PolicyRow.name == "stale").execute()
    resp = client.post("/admin/v1/policies/stale/activate", headers=tenant.admin)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "policy_unreadable"
    with app.app_context():
        assert not PolicyRow.get(PolicyRow.name == "stale").active


# -- event triggers -------------------------------------------------------------------------------


@pytest.fixture
def trigger_tenant(app, client, tenant):
    """A scored tenant with the payment_failed trigger policy switched on."""
    import_users(client, tenant, [f"dev_t{u}" for u in range(5)], silent_days=5, now_ms=NOW)
    with app.app_context():
        scoring.score_tenant(Tenant.get_by_id(tenant.id), TODAY)
    resp = client.post(
        "/admin/v1/policies",
        json={"preset": "payment_failed", "active": True},
        headers=tenant.admin,
    )
    assert resp.status_code == 201, resp.get_json()
    return tenant


def post_batch(client, tenant, prefix: str):
    h = login(client, tenant, "t1")
    batch = [
        {"id": f"{prefix}-open", "type": "app_open", "ts": NOW - 120_000},
        {"id": f"{prefix}-pf", "type": "payment_failed", "ts": NOW - 60_000},
    ]
    return client.post("/mp/v1/events", json={"events": batch}, headers=h)


def stored(app, prefix: str) -> int:
    with app.app_context():
        return Event.select().where(Event.client_id.startswith(prefix)).count()


@pytest.mark.parametrize(
    "where",
    [
        # one trigger policy's decision raises (isolated in triggers.on_events)
        (triggers, "population"),
        # the triggers as a whole raise (caught by the events view)
        (policies, "active_rows"),
    ],
    ids=["policy", "all-triggers"],
)
def test_a_failing_trigger_does_not_fail_the_event_batch(
    app, client, trigger_tenant, monkeypatch, where
):
    module, name = where

    def broken(*args, **kwargs):
        raise RuntimeError("trigger policy blew up")

    monkeypatch.setattr(module, name, broken)
    resp = post_batch(client, trigger_tenant, "b1")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["accepted"] == 2
    assert stored(app, "b1") == 2
    assert touches(app, trigger_tenant) == []
    # The phone's resend of the same batch is a duplicate, not a second failure.
    again = post_batch(client, trigger_tenant, "b1")
    assert again.status_code == 200 and again.get_json()["accepted"] == 0
    assert stored(app, "b1") == 2
