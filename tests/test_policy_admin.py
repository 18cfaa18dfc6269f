"""The policies admin API: validation, presets, replace, activate, delete, preview."""

from __future__ import annotations

from helpers.campaigns import POLICY, add_policy, import_history, run_job


def test_presets_install_and_list(client, tenant):
    listed = client.get("/admin/v1/policies", headers=tenant.admin).get_json()
    assert {"tiered", "golden_window", "coupon_blast", "uplift"} <= set(listed["presets"])
    # tiered hands out a coupon template this tenant does not have: refused, named.
    resp = client.post("/admin/v1/policies", json={"preset": "tiered"}, headers=tenant.admin)
    assert resp.status_code == 400
    assert "专属回归券满15减5" in resp.get_json()["error"]["message"]
    ok = client.post("/admin/v1/policies", json={"preset": "golden_window"}, headers=tenant.admin)
    assert ok.status_code == 201 and ok.get_json()["active"] is False
    unknown = client.post("/admin/v1/policies", json={"preset": "nope"}, headers=tenant.admin)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "unknown_preset"


def test_a_policy_as_a_json_object(client, tenant):
    body = {
        "policy": {
            "name": "cards",
            "arms": [
                {"name": "card", "touches": [{"day": 0, "channel": "in_app", "message": "m"}]}
            ],
            "messages": {"m": {"kind": "caring", "text": "好久不见"}},
        },
        "active": True,
    }
    resp = client.post("/admin/v1/policies", json=body, headers=tenant.admin)
    assert resp.status_code == 201, resp.get_json()
    got = client.get("/admin/v1/policies/cards", headers=tenant.admin).get_json()
    assert got["active"] is True and got["arms"] == ["card"]


def test_body_needs_exactly_one_source(client, tenant):
    both = {"source": POLICY, "preset": "tiered"}
    assert client.post("/admin/v1/policies", json=both, headers=tenant.admin).status_code == 400
    none = {"active": True}
    assert client.post("/admin/v1/policies", json=none, headers=tenant.admin).status_code == 400


def test_duplicate_name_is_a_conflict_and_put_replaces(client, tenant):
    add_policy(client, tenant, POLICY, active=False)
    again = client.post("/admin/v1/policies", json={"source": POLICY}, headers=tenant.admin)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "policy_exists"
    changed = POLICY.replace("holdout_share: 0.3", "holdout_share: 0.2")
    put = client.put("/admin/v1/policies/comeback", json={"source": changed}, headers=tenant.admin)
    assert put.status_code == 200
    body = put.get_json()
    assert body["version"] == 2 and body["holdout_share"] == 0.2 and body["source"] == changed


def test_a_policy_cannot_be_renamed_by_put(client, tenant):
    add_policy(client, tenant, POLICY)
    renamed = POLICY.replace("name: comeback", "name: other")
    resp = client.put("/admin/v1/policies/comeback", json={"source": renamed}, headers=tenant.admin)
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "name"


def test_invalid_edit_keeps_the_old_version(client, tenant):
    add_policy(client, tenant, POLICY)
    broken = POLICY.replace("channel: sms", "channel: carrier_pigeon")
    resp = client.put("/admin/v1/policies/comeback", json={"source": broken}, headers=tenant.admin)
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["field"] == "arms[0].touches[1].channel"
    assert (
        err["line"]
        == broken.splitlines().index(
            next(line for line in broken.splitlines() if "carrier_pigeon" in line)
        )
        + 1
    )
    kept = client.get("/admin/v1/policies/comeback", headers=tenant.admin).get_json()
    assert kept["version"] == 1 and kept["source"] == POLICY


def test_activate_deactivate_and_what_the_job_runs(app, client, tenant):
    import_history(client, tenant, users=5, silent_days=5)
    add_policy(client, tenant, POLICY, active=False)
    assert run_job(app, tenant)["policies"] == {}
    on = client.post("/admin/v1/policies/comeback/activate", headers=tenant.admin)
    assert on.get_json()["active"] is True
    assert "comeback" in run_job(app, tenant)["policies"]
    off = client.post("/admin/v1/policies/comeback/deactivate", headers=tenant.admin)
    assert off.get_json()["active"] is False


def test_delete_only_without_touches(app, client, tenant):
    add_policy(client, tenant, POLICY)
    assert client.delete("/admin/v1/policies/comeback", headers=tenant.admin).status_code == 200
    assert client.get("/admin/v1/policies/comeback", headers=tenant.admin).status_code == 404
    import_history(client, tenant, users=5, silent_days=5)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)  # writes skipped touches (no allowances)
    resp = client.delete("/admin/v1/policies/comeback", headers=tenant.admin)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "policy_has_touches"


def test_preview_needs_scores_and_writes_nothing(app, client, tenant):
    add_policy(client, tenant, POLICY)
    none = client.get("/admin/v1/policies/comeback/preview", headers=tenant.admin)
    assert none.status_code == 404 and none.get_json()["error"]["code"] == "not_scored"
    import_history(client, tenant, users=20, silent_days=5)
    with app.app_context():
        from backend.services.scoring import score_tenant
        from backend.store.models import Tenant, Touch

        score_tenant(Tenant.get_by_id(tenant.id), 20522)  # 2026-03-10
    preview = client.get("/admin/v1/policies/comeback/preview", headers=tenant.admin).get_json()
    assert preview["skipped"] == 20 and preview["reasons"] == {"no_permission": 20}
    with app.app_context():
        assert Touch.select().count() == 0


def test_other_tenants_policies_are_invisible(client, tenant, other_tenant):
    add_policy(client, tenant, POLICY)
    resp = client.get("/admin/v1/policies/comeback", headers=other_tenant.admin)
    assert resp.status_code == 404
    assert client.get("/admin/v1/policies", headers=other_tenant.admin).get_json()["policies"] == []


def test_contact_is_validated(client, tenant):
    import_history(client, tenant, users=1, silent_days=5)
    bad = client.patch(
        "/admin/v1/users/u000/contact", json={"phone": "call me"}, headers=tenant.admin
    )
    assert bad.status_code == 400
    ok = client.patch(
        "/admin/v1/users/u000/contact",
        json={"phone": "13800000000", "oa_openid": "oa_x"},
        headers=tenant.admin,
    )
    assert ok.get_json() == {"user": "u000", "phone": "13800000000", "oa_openid": "oa_x"}
