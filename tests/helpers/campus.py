"""A small campus with a week of history behind it, for the dashboard's tests: users scored
on two nights, a live policy that sent and held out, some users back (and paying), windows
closed and attributed. Built through the admin API and the real nightly job.

Two cohorts, so the report has both of its measures (backend/core/recall.py): `u…` users
silent 5 days at decision (still active: their returns are retention_active) and `l…` users
silent 10–20 days (lapsed at decision: their returns are recall)."""

from __future__ import annotations

from backend.store.models import Touch, User

from .campaigns import (
    DAY_MS,
    NOW,
    POLICY,
    TODAY,
    add_policy,
    grant_all,
    import_history,
    run_job,
)


def import_lapsed(client, tenant, users: int, visits: int = 3) -> None:
    """`users` users (`l000`, …) last seen 10–20 days ago: past the tiers' 7-day silence
    threshold, so lapsed at decision."""
    events = []
    for u in range(users):
        silent = LAPSED_SILENT_DAYS[0] + u % (LAPSED_SILENT_DAYS[1] - LAPSED_SILENT_DAYS[0] + 1)
        for k in range(visits):
            ts = NOW - (silent + 3 * k) * DAY_MS
            events.append({"user": f"l{u:03d}", "id": f"l{u}-{k}", "type": "app_open", "ts": ts})
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.status_code == 200 and resp.get_json()["accepted"] == len(events)


LAPSED_SILENT_DAYS = (10, 20)


def build(app, client, tenant, clock, users: int = 60, lapsed: int = 30) -> dict:
    """Returns the openids of the users who came back (treated and held out; the active
    cohort's first)."""
    import_history(client, tenant, users=users, silent_days=5)
    import_lapsed(client, tenant, users=lapsed)
    grant_all(app, tenant)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)
    with app.app_context():
        rows = Touch.select(User.openid, Touch.holdout).join(User).where(Touch.day == TODAY)
        groups = dict(rows.tuples())
    back = []
    for cohort in ("u", "l"):  # within each cohort: every 2nd treated, every 3rd held out
        mine = {o: held for o, held in groups.items() if o.startswith(cohort)}
        back += sorted(o for o, held in mine.items() if not held)[::2]
        back += sorted(o for o, held in mine.items() if held)[::3]
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
