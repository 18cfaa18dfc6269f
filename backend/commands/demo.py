"""The scripted mini-program session `make demo` runs against the demo tenant."""

from __future__ import annotations

import json

import click
from flask import Flask

from backend.commands.demo_campus import import_campus
from backend.services.seeding import load_demo_tenant


def _show(step: str, resp) -> dict:
    body = resp.get_json()
    click.echo(f"\n== {step}: HTTP {resp.status_code}")
    click.echo(json.dumps(body, ensure_ascii=False, indent=2))
    if resp.status_code >= 400:
        raise click.ClickException(f"{step} failed")
    return body


def run_session(app: Flask) -> None:
    """Log a student in, post a day of events, claim a coupon and pay with it."""
    clock = app.config["CLOCK"]
    now_ms = clock.now_ms()
    appid, api_key = load_demo_tenant(now_ms)
    http = app.test_client()
    code = f"student{now_ms}"  # a fresh student each run, so the demo is repeatable

    login = _show(
        "login (dev mode: openid dev_<code>)",
        http.post("/mp/v1/login", json={"code": code}, headers={"X-Huiliu-Appid": appid}),
    )
    auth = {"Authorization": f"Bearer {login['token']}"}
    templates = _show(
        "admin: coupon templates",
        http.get("/admin/v1/coupon-templates", headers={"X-Api-Key": api_key}),
    )
    claimable = next(t for t in templates["templates"] if t["claimable"] and t["remaining"] > 0)

    order_id = f"demo-order-{now_ms}"
    batch = {
        "sent_at": now_ms,
        "events": [
            {"id": f"{code}-1", "type": "app_open", "ts": now_ms - 600_000},
            {
                "id": f"{code}-2",
                "type": "page_view",
                "ts": now_ms - 590_000,
                "props": {"page": "shop/canteen-1"},
            },
            {"id": f"{code}-3", "type": "add_to_cart", "ts": now_ms - 500_000},
            {
                "id": f"{code}-4",
                "type": "order_paid",
                "ts": now_ms - 400_000,
                "props": {"order_id": order_id, "amount_fen": 2350, "merchant": "canteen-1"},
            },
            {"id": f"{code}-5", "type": "teleport", "ts": now_ms},  # not in the vocabulary
            {"id": f"{code}-6", "type": "app_open", "ts": now_ms + 3_600_000},  # from the future
        ],
    }
    _show(
        "post 6 events (2 deliberately bad)", http.post("/mp/v1/events", json=batch, headers=auth)
    )
    _show(
        "retry the same batch (nothing is counted twice)",
        http.post("/mp/v1/events", json=batch, headers=auth),
    )
    coupon = _show(
        f"claim coupon {claimable['name']}",
        http.post("/mp/v1/coupons/claim", json={"template_id": claimable["id"]}, headers=auth),
    )
    redeem = {"order_id": f"{order_id}-2", "order_amount_fen": coupon["min_spend_fen"] + 300}
    _show(
        "redeem it", http.post(f"/mp/v1/coupons/{coupon['id']}/redeem", json=redeem, headers=auth)
    )
    resent = http.post(f"/mp/v1/coupons/{coupon['id']}/redeem", json=redeem, headers=auth)
    click.echo(
        f"\n== resend that redemption (an answer lost on the way): HTTP {resent.status_code}, "
        f"the same coupon, {resent.get_json()['status']} once"
    )
    other = {**redeem, "order_id": f"{order_id}-3"}
    again = http.post(f"/mp/v1/coupons/{coupon['id']}/redeem", json=other, headers=auth)
    click.echo(
        f"\n== redeem it on another order: HTTP {again.status_code} "
        f"{again.get_json()['error']['code']}"
    )
    _show("wallet", http.get("/mp/v1/coupons", headers=auth))

    students, accepted = import_campus(app, appid, api_key)
    click.echo(
        f"\n== imported a campus history: {students} students, {accepted} new events "
        "(60 days; regulars, occasional users and students drifting away)"
    )
    click.echo(f"\ndemo tenant appid {appid}; admin API key for this run: {api_key}")
