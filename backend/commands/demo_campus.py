"""A synthetic campus history for the demo tenant, imported through the real import API.

Three hundred students over the last 60 days: regulars, occasional users and students who
drifted away at different times, with orders, subscribe-message permissions and a few phone
numbers and Official Account followers. Seeded, and event ids are derived from the China date,
so running the demo twice on one day imports nothing twice.
"""

from __future__ import annotations

import numpy as np
from flask import Flask

from backend.core.calendar import china_day, day_start_ms
from backend.services import subscriptions, tenants, users
from backend.store.db import write_transaction
from backend.store.models import User

TEMPLATES = ("tmpl_shop_update", "tmpl_coupon_arrived", "tmpl_saved_items")
MERCHANTS = ("canteen-1", "canteen-2", "snack-dorm", "milk-tea")


def _student_days(rng: np.random.Generator, today: int, days: int):
    """(visit days, persona) of one student."""
    kind = rng.choice(["regular", "occasional", "drifting"], p=[0.3, 0.25, 0.45])
    start = today - days
    if kind == "regular":
        rate, stop = rng.uniform(0.5, 0.9), today
    elif kind == "occasional":
        rate, stop = rng.uniform(0.1, 0.3), today
    else:
        rate, stop = rng.uniform(0.3, 0.8), today - int(rng.integers(2, 45))
    span = np.arange(start, stop + 1)
    visits = span[rng.random(span.size) < rate]
    return visits, kind


def import_campus(
    app: Flask, appid: str, api_key: str, n: int = 300, days: int = 60, seed: int = 7
):
    """Import the history; returns (students, events accepted)."""
    http = app.test_client()
    clock = app.config["CLOCK"]
    now = clock.now_ms()
    today = int(china_day(now))
    rng = np.random.default_rng(seed)
    batch: list[dict] = []
    accepted = 0
    openids = []

    def flush():
        nonlocal accepted, batch
        if batch:
            resp = http.post(
                "/admin/v1/events/import", json={"events": batch}, headers={"X-Api-Key": api_key}
            )
            accepted += resp.get_json()["accepted"]
            batch = []

    for s in range(n):
        openid = f"demo_student_{s:03d}"
        openids.append(openid)
        visits, _ = _student_days(rng, today, days)
        hour = int(rng.choice([8, 12, 12, 18, 18, 21, 22]))
        for d in visits:
            ts = day_start_ms(int(d)) + hour * 3_600_000 + int(rng.integers(0, 3_000_000))
            if ts >= now:
                continue
            batch.append(
                {"user": openid, "id": f"d{today}-{s}-{d}-o", "type": "app_open", "ts": ts}
            )
            if rng.random() < 0.4:
                amount = int(np.clip(rng.lognormal(np.log(2200), 0.4), 500, 20000))
                batch.append(
                    {
                        "user": openid,
                        "id": f"d{today}-{s}-{d}-p",
                        "type": "order_paid",
                        "ts": ts + 600_000,
                        "props": {
                            "order_id": f"demo-{today}-{s}-{d}",
                            "amount_fen": amount,
                            "merchant": str(rng.choice(MERCHANTS)),
                        },
                    }
                )
            if len(batch) >= 1500:
                flush()
    flush()
    _permissions(app, appid, openids, rng, now)
    return n, accepted


def _permissions(app, appid, openids, rng, now) -> None:
    """Most students accepted a subscribe prompt once; some gave a phone or follow the OA."""
    tenant = tenants.by_appid(appid)
    for i, openid in enumerate(openids):
        user = users.by_openid(tenant.id, openid)
        if rng.random() < 0.7:
            results = {t: "accept" for t in TEMPLATES if rng.random() < 0.7} or {
                TEMPLATES[0]: "accept"
            }
            subscriptions.record(tenant.id, user.id, {"id": f"demo-{i}", "results": results}, now)
        phone = f"138{i:08d}" if rng.random() < 0.3 else None
        follower = f"oa_{openid}" if rng.random() < 0.4 else None
        with write_transaction():
            User.update(phone=phone, oa_openid=follower).where(User.id == user.id).execute()
