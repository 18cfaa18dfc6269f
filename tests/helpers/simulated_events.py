"""A simulated campus's doings as the phone posts them: what the calibration tests push
through the API into a fresh database before fitting it back."""

from __future__ import annotations

import numpy as np

from backend.core.calendar import day_start_ms
from backend.core.columns import KIND_CODES
from simulator.model import CampusModel


def api_events(model: CampusModel) -> list[tuple[int, int, dict]]:
    """(user row, day, event as the mini-program posts it) for everything the campus did:
    an app_open and a session_end per visit, an order_paid per order."""
    ev, orders = model.log.columns()
    hour = model.state.usual_hour.astype(np.int64)
    out = []
    for u, d, kind, secs in zip(ev.user, ev.day, ev.kind, ev.duration_s, strict=True):
        u, d = int(u), int(d)
        opened = day_start_ms(d) + int(hour[u]) * 3_600_000
        if kind == KIND_CODES["app_open"]:
            out.append((u, d, {"id": f"o{d}", "type": "app_open", "ts": opened}))
        elif kind == KIND_CODES["session_end"]:
            left = opened + min(int(secs * 1000), 3_500_000)  # same hour, same day
            props = {"duration_s": round(float(secs), 1)}
            out.append((u, d, {"id": f"s{d}", "type": "session_end", "ts": left, "props": props}))
    for u, d, amount in zip(orders.user, orders.day, orders.amount_fen, strict=True):
        u, d = int(u), int(d)
        paid = day_start_ms(d) + int(hour[u]) * 3_600_000 + 60_000
        props = {"order_id": f"{u}-{d}", "amount_fen": int(amount)}
        out.append((u, d, {"id": f"p{d}", "type": "order_paid", "ts": paid, "props": props}))
    return out
