"""POST /mp/v1/events and the historical import: validation, idempotency, orders."""

from __future__ import annotations

import json

from helpers.app import T0, login

from backend.core.clock import to_ms
from backend.store.models import Event, Order, User

NOW = to_ms(T0)


def ev(i: int, type_: str = "app_open", ts: int | str | None = None, **props) -> dict:
    out = {"id": f"e{i}", "type": type_, "ts": NOW - 60_000 if ts is None else ts}
    if props:
        out["props"] = props
    return out


def post(client, headers, events, **extra):
    return client.post("/mp/v1/events", json={"events": events, **extra}, headers=headers)


def test_valid_batch_is_stored_with_utc_times(client, tenant, app):
    h = login(client, tenant)
    resp = post(client, h, [ev(1), ev(2, "page_view", page="home")])
    assert resp.status_code == 200
    assert resp.get_json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    with app.app_context():
        rows = list(Event.select().order_by(Event.client_id))
        assert [r.type for r in rows] == ["app_open", "page_view"]
        assert rows[0].ts_ms == NOW - 60_000
        assert json.loads(rows[1].props) == {"page": "home"}
        assert User.get(User.openid == "dev_alice").last_seen_ms == NOW - 60_000


def test_retried_batch_adds_nothing(client, tenant, app):
    h = login(client, tenant)
    batch = [ev(i) for i in range(10)] + [ev(99, "order_paid", order_id="o1", amount_fen=1200)]
    first = post(client, h, batch).get_json()
    second = post(client, h, batch).get_json()
    assert first == {"accepted": 11, "duplicates": 0, "rejected": []}
    assert second == {"accepted": 0, "duplicates": 11, "rejected": []}
    with app.app_context():
        assert Event.select().count() == 11
        assert Order.select().count() == 1


def test_duplicate_ids_inside_one_batch_count_once(client, tenant, app):
    h = login(client, tenant)
    body = post(client, h, [ev(1), ev(1), ev(2)]).get_json()
    assert body == {"accepted": 2, "duplicates": 1, "rejected": []}


def test_same_event_id_from_two_users_is_two_events(client, tenant, app):
    post(client, login(client, tenant, "a"), [ev(1)])
    body = post(client, login(client, tenant, "b"), [ev(1)]).get_json()
    assert body["accepted"] == 1


def test_three_bad_events_of_ten_keep_seven_and_name_the_three(client, tenant, app):
    h = login(client, tenant)
    batch = [ev(i) for i in range(10)]
    batch[2]["type"] = "teleport"
    batch[5]["ts"] = NOW + 3_600_000  # an hour in the future
    batch[8] = {"id": "e8", "type": "app_open", "ts": NOW, "colour": "red"}  # unknown field
    body = post(client, h, batch).get_json()
    assert body["accepted"] == 7
    assert [r["index"] for r in body["rejected"]] == [2, 5, 8]
    assert "vocabulary" in body["rejected"][0]["error"]
    assert "future" in body["rejected"][1]["error"]
    assert "colour" in body["rejected"][2]["error"]
    with app.app_context():
        assert sorted(e.client_id for e in Event.select()) == [
            f"e{i}" for i in range(10) if i not in (2, 5, 8)
        ]


def test_each_kind_of_bad_event_is_named(client, tenant):
    h = login(client, tenant)
    cases = {
        "missing id": {"type": "app_open", "ts": NOW},
        "id not a string": {"id": 5, "type": "app_open", "ts": NOW},
        "props not an object": {"id": "x1", "type": "app_open", "ts": NOW, "props": [1]},
        "ts looks like seconds": {"id": "x2", "type": "app_open", "ts": NOW // 1000},
        "ts garbage": {"id": "x3", "type": "app_open", "ts": "yesterday"},
        "ts bool": {"id": "x4", "type": "app_open", "ts": True},
        "too old": {"id": "x5", "type": "app_open", "ts": NOW - 8 * 86_400_000},
        "order without amount": {
            "id": "x6",
            "type": "order_paid",
            "ts": NOW,
            "props": {"order_id": "o"},
        },
        "float fen": {
            "id": "x7",
            "type": "order_paid",
            "ts": NOW,
            "props": {"order_id": "o", "amount_fen": 12.5},
        },
        "unknown merchant": {
            "id": "x8",
            "type": "order_paid",
            "ts": NOW,
            "props": {"order_id": "o", "amount_fen": 100, "merchant": "nope"},
        },
        "huge props": {"id": "x9", "type": "app_open", "ts": NOW, "props": {"a": "x" * 3000}},
        "empty custom": {"id": "x10", "type": "custom:", "ts": NOW},
        "not an object": "app_open",
    }
    body = post(client, h, list(cases.values())).get_json()
    assert body["accepted"] == 0
    assert len(body["rejected"]) == len(cases), body
    errors = {name: r["error"] for name, r in zip(cases, body["rejected"], strict=True)}
    assert "id" in errors["missing id"]
    assert "seconds" in errors["ts looks like seconds"]
    assert "older" in errors["too old"]
    assert "amount_fen" in errors["order without amount"]
    assert "merchant" in errors["unknown merchant"]
    assert "2048" in errors["huge props"]


def test_custom_types_and_iso_times_are_accepted(client, tenant, app):
    h = login(client, tenant)
    batch = [
        ev(1, "custom:lottery_spin"),
        # Naive ISO is China time: 17:30 in Shanghai is 09:30 UTC.
        {"id": "e2", "type": "app_open", "ts": "2026-03-10T17:30:00"},
        {"id": "e3", "type": "app_open", "ts": "2026-03-10T09:30:00Z"},
    ]
    assert post(client, h, batch).get_json()["accepted"] == 3
    with app.app_context():
        ts = {e.client_id: e.ts_ms for e in Event.select()}
    assert ts["e2"] == ts["e3"] == NOW - 30 * 60_000


def test_phone_clock_skew_is_corrected_by_sent_at(client, tenant, app):
    h = login(client, tenant)
    skew = 2 * 3_600_000  # the phone's clock runs two hours fast
    batch = [ev(1, ts=NOW + skew - 60_000)]
    # Without sent_at the event is two hours in the future: refused.
    refused = post(client, h, batch).get_json()
    assert refused["accepted"] == 0 and "future" in refused["rejected"][0]["error"]
    body = post(client, h, batch, sent_at=NOW + skew).get_json()
    assert body["accepted"] == 1
    with app.app_context():
        assert Event.get().ts_ms == NOW - 60_000


def test_batch_over_500_is_refused_whole(client, tenant, app):
    h = login(client, tenant)
    resp = post(client, h, [ev(i) for i in range(501)])
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "batch_too_large"
    with app.app_context():
        assert Event.select().count() == 0


def test_envelope_errors_are_400_json(client, tenant):
    h = login(client, tenant)
    cases = [
        ({"events": "nope"}, "events"),
        ({"events": [], "extra": 1}, "extra"),
        ({"events": [], "sent_at": "never"}, "sent_at"),
        ([], "object"),
    ]
    for body, word in cases:
        resp = client.post("/mp/v1/events", json=body, headers=h)
        assert resp.status_code == 400, body
        assert word in resp.get_json()["error"]["message"], resp.get_json()


def test_nan_in_props_is_malformed_json(client, tenant):
    h = login(client, tenant)
    raw = '{"events": [{"id": "a", "type": "app_open", "ts": 1, "props": {"x": NaN}}]}'

    resp = client.post("/mp/v1/events", data=raw, headers={**h, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "malformed_json"


def test_injection_strings_are_stored_literally(client, tenant, app):
    h = login(client, tenant)
    nasty = "'); DROP TABLE event; -- <script>alert(1)</script> 😀 %00 \\x00"
    body = post(client, h, [{"id": "x'--", "type": "search", "ts": NOW, "props": {"q": nasty}}])
    assert body.get_json()["accepted"] == 1
    with app.app_context():
        stored = Event.get()
        assert stored.client_id == "x'--"
        assert json.loads(stored.props) == {"q": nasty}


def test_order_paid_lands_in_orders_and_refund_marks_it(client, tenant, app):
    h = login(client, tenant)
    post(client, h, [ev(1, "order_paid", order_id="o-1", amount_fen=2350, merchant="canteen-1")])
    post(client, h, [ev(2, "order_refunded", order_id="o-1")])
    with app.app_context():
        order = Order.get()
        assert (order.order_ref, order.amount_fen, order.merchant.code) == (
            "o-1",
            2350,
            "canteen-1",
        )
        assert order.status == "refunded"
        assert order.paid_ms == NOW - 60_000


def test_events_need_a_valid_token(client, tenant):
    assert post(client, {}, [ev(1)]).status_code == 401
    resp = post(client, {"Authorization": "Bearer nonsense"}, [ev(1)])
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "invalid_token"


def test_import_accepts_history_and_creates_users(client, tenant, app):
    old = to_ms(T0.replace(year=2024))
    events = [
        {"user": "o_hist_1", "id": "h1", "type": "app_open", "ts": old},
        {
            "user": "o_hist_1",
            "id": "h2",
            "type": "order_paid",
            "ts": old + 1000,
            "props": {"order_id": "old-1", "amount_fen": 990, "merchant": "canteen-1"},
        },
        {"user": "o_hist_2", "id": "h1", "type": "app_open", "ts": old},
        {"user": "o_hist_2", "id": "h3", "type": "app_open", "ts": "2014-12-31T00:00:00Z"},
        {"id": "h4", "type": "app_open", "ts": old},  # no user
    ]
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    body = resp.get_json()
    assert body["accepted"] == 3
    assert [r["index"] for r in body["rejected"]] == [3, 4]
    again = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert again.get_json()["duplicates"] == 3
    with app.app_context():
        assert {u.openid for u in User.select()} == {"o_hist_1", "o_hist_2"}
        assert Order.get().amount_fen == 990


def test_import_needs_the_admin_key(client, tenant):
    resp = client.post("/admin/v1/events/import", json={"events": []})
    assert resp.status_code == 401
    resp = client.post(
        "/admin/v1/events/import", json={"events": []}, headers={"X-Api-Key": "hl_deadbeef_wrong"}
    )
    assert resp.status_code == 401
