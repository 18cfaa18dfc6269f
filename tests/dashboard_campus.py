"""A small campus with a week of history behind it, for the dashboard's tests: users scored
on two nights, a live policy that sent and held out, some users back (and paying), windows
closed and attributed. Built through the admin API and the real nightly job."""

from __future__ import annotations

from test_campaigns import (
    DAY_MS,
    NOW,
    POLICY,
    TODAY,
    add_policy,
    grant_all,
    import_history,
    run_job,
)

from backend.store.models import Touch, User


def sign_in(client, api_key: str):
    """Sign in through the form, CSRF token and all, as a browser would."""
    page = client.get("/admin/login").get_data(as_text=True)
    token = csrf_from(page)
    return client.post("/admin/login", data={"api_key": api_key, "csrf_token": token})


def csrf_from(page: str) -> str:
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def build(app, client, tenant, clock, users: int = 60) -> dict:
    """Returns the openids of the treated users who came back."""
    import_history(client, tenant, users=users, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)
    with app.app_context():
        rows = Touch.select(User.openid, Touch.holdout).join(User).where(Touch.day == TODAY)
        groups = dict(rows.tuples())
    back = sorted(o for o, held in groups.items() if not held)[::2]
    back += sorted(o for o, held in groups.items() if held)[::3]
    clock.advance(days=1)
    events = []
    for o in back:
        events.append({"user": o, "id": f"back-{o}", "type": "app_open", "ts": NOW + DAY_MS})
    for o in back[:3]:
        events.append(
            {
                "user": o,
                "id": f"pay-{o}",
                "type": "order_paid",
                "ts": NOW + DAY_MS + 60_000,
                "props": {"order_id": f"o-{o}", "amount_fen": 2500, "merchant": "canteen-1"},
            }
        )
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == len(events)
    clock.advance(days=7)  # the 7-day windows close; the night's job attributes them
    run_job(app, tenant, now=NOW + 8 * DAY_MS, day=TODAY + 8)
    return {"back": back}
