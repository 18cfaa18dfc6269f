"""Response rates calibrated by recovery: a campus answers messages with known response rates
(the default table's columns scaled by known factors), a probe policy with a 50% holdout
runs on it, `calibrate` fits the rates from its touches and holdouts alone, and the fit must
find the known factors within bands set by the binomial standard error of the holdout
comparison (docs/simulator.md, "Response rates")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.app import build_app, close_app, make_tenant
from helpers.simulated_events import api_events

from backend.core.calendar import day_start_ms
from backend.core.clock import FixedClock, from_ms
from backend.core.policy import parse_policy
from backend.core.policy.spec import CHANNELS, MESSAGE_KINDS
from backend.core.tiers import TIERS
from backend.core.touches import TouchColumns
from simulator.calibrate_response import MIN_TOUCHES, fit_response
from simulator.model import CampusModel
from simulator.params import SimParams
from simulator.response import RESPONSE
from simulator.touch_log import HELD_OUT

# The truth: each kind's column of the default table × this (no rate reaches 1, so the
# effect of a kind is proportional to its factor).
KNOWN = {"content": 0.4, "coupon": 0.5, "caring": 0.4, "reminder": 3.0}
WARMUP, DAYS = 28, 56
MESSAGES = {
    "content": "shop_update",
    "coupon": "coupon_news",
    "caring": "care_note",
    "reminder": "saved_cart",
}
PROBE = {
    "name": "probe",
    "description": "calibration probe: one message of each kind at random, half held out",
    "eligibility": {
        "tiers": ["active", "low_frequency", "churn_risk"],
        "min_days_silent": 3,
        "max_days_silent": 30,
    },
    "timing": {"lapse_after_days": 3, "send_hour": "usual", "grace_days": 2},
    "holdout_share": 0.5,
    "arms": [
        {"name": kind, "touches": [{"day": 0, "channel": "subscribe", "message": m}]}
        for kind, m in MESSAGES.items()
    ],
    "messages": {
        m: {
            "kind": kind,
            "template_id": f"tmpl_{m}",
            "page": "pages/index/index",
            "fields": {"thing1": "你常去的店铺有新消息"},
        }
        for kind, m in MESSAGES.items()
    },
    "caps": {"touches_per_30d": 3},
    "attribution_window_days": 7,
}


def known_params() -> SimParams:
    table = {
        p: [round(v[k] * KNOWN[kind], 4) for k, kind in enumerate(MESSAGE_KINDS)]
        for p, v in RESPONSE.items()
    }
    assert max(max(v) for v in table.values()) < 1
    return SimParams(response={"response": table})


def run_truth(users: int, seed: int) -> CampusModel:
    """The known campus under the probe, its last touches' windows closed."""
    model = CampusModel(
        users=users,
        seed=seed,
        params=known_params(),
        policy=parse_policy(PROBE),
        warmup_days=WARMUP,
    )
    for _ in range(WARMUP + DAYS + 8):
        model.step()
    return model


def touch_columns(model: CampusModel) -> TouchColumns:
    """The probe's decided touches (sent and held out) of the trial days, as a tenant's
    touch table holds them."""
    log = model.campaign.log

    def col(name: str) -> np.ndarray:
        return log.column(name, skipped=False)

    kind = model.campaign.kind_of(col("arm"), col("step"))
    keep = col("day") < model.start_day + WARMUP + DAYS
    touches = TouchColumns.with_text(
        user=col("user"),
        day=col("day"),
        channel=np.array([CHANNELS[c] for c in col("channel")], dtype=object),
        kind=np.array([MESSAGE_KINDS[k] for k in kind], dtype=object),
        holdout=col("status") == HELD_OUT,
        returned=col("returned").astype(bool),
        tier=np.array([TIERS[t] for t in col("tier")], dtype=object),
        policy=np.ones(kind.size, dtype=np.int64),
        step=col("step").astype(np.int64),
    )
    return touches.take(np.flatnonzero(keep))


def test_known_response_rates_are_recovered_from_touches_and_holdouts():
    """40,000 students, 8 weeks of the probe: about 8,000 first decisions of each side. The
    band for each kind is 3 standard errors of its fitted factor (the holdout comparison's
    binomial error and the simulated campus's, by the delta method); the run's figures are
    in docs/simulator.md."""
    truth = run_truth(40_000, seed=1)
    touches = touch_columns(truth)
    overrides, record = fit_response(
        touches, {1: parse_policy(PROBE)}, SimParams(), truth.start_day, 40_000, seed=11
    )
    print(json.dumps(record["kinds"], indent=1))
    kinds = record["kinds"]
    for kind, known in KNOWN.items():
        k = kinds[kind]
        assert k["fitted"] and k["cells_used"] >= 2, kind
        assert abs(k["raw_factor"] - known) < 3 * k["factor_se"], (kind, known, k)
    # The test can fail: the defaults (factor 1) lie outside the band of every kind moved
    # by more than 3 standard errors (all but coupon at this size).
    for kind in ("content", "caring", "reminder"):
        assert abs(kinds[kind]["raw_factor"] - 1.0) > 3 * kinds[kind]["factor_se"], kind
    # The table the simulator reads: each column × its (shrunk) factor.
    table = overrides["response"]
    for k, kind in enumerate(MESSAGE_KINDS):
        for persona, rates in table.items():
            want = min(1.0, RESPONSE[persona][k] * kinds[kind]["factor"])
            assert rates[k] == pytest.approx(want, abs=1e-4)
    # A report line per cell: n, estimate, interval, used or not.
    cells = {(c["kind"], c["tier"]): c for c in record["cells"]}
    first = touches.first_decisions()
    for (kind, tier), c in cells.items():
        mine = (first.labels("kind") == kind) & (first.labels("tier") == tier)
        assert c["treated"] == int((mine & ~first.holdout).sum())
        assert c["holdout"] == int((mine & first.holdout).sum())
        assert c["lo"] <= c["effect"] <= c["hi"]
        assert c["used"] == (min(c["treated"], c["holdout"]) >= MIN_TOUCHES), c


def test_first_decisions_count_each_user_once_per_policy():
    t = TouchColumns.with_text(
        user=np.array([3, 3, 1, 3, 1]),
        day=np.array([10, 10, 12, 5, 12]),
        channel=np.array(["sms"] * 5, dtype=object),
        kind=np.array(["content", "coupon", "caring", "reminder", "coupon"], dtype=object),
        holdout=np.zeros(5, dtype=bool),
        returned=np.zeros(5, dtype=bool),
        tier=np.array(["active"] * 5, dtype=object),
        policy=np.array([1, 1, 1, 2, 1]),
        step=np.array([1, 0, 1, 0, 0]),
    )
    first = t.first_decisions()
    policy, kind = first.labels("policy").tolist(), first.labels("kind").tolist()
    got = sorted(zip(policy, first.user.tolist(), kind, strict=True))
    assert got == [(1, 1, "coupon"), (1, 3, "coupon"), (2, 3, "reminder")]


USERS_DB = 3000


@pytest.fixture(scope="module")
def truth_small():
    return run_truth(USERS_DB, seed=5)


@pytest.mark.slow
def test_calibrate_fits_response_rates_from_the_database(db_url, truth_small, tmp_path):
    """The same path through a tenant's database, on both databases: the campus's events go
    through the admin's import, the policy is stored through the service, the touches as the
    campaign job would have recorded them; `calibrate --out` reports a line per kind × tier
    and writes the fitted table into the file `simulate --params` reads."""
    model = truth_small
    first_day = model.start_day
    last_day = first_day + WARMUP + DAYS - 1
    clock = FixedClock(from_ms(day_start_ms(last_day + 1) + 9 * 3_600_000))
    app = build_app(db_url, clock, TOKEN_TTL_S=10**8)
    try:
        tenant = make_tenant(app, "wxcalresponse0001")
        client = app.test_client()
        events = sorted(api_events(model), key=lambda x: x[:2])
        rows = [{"user": f"dev_sim{u + 1:07d}", **e} for u, d, e in events if d <= last_day]
        for start in range(0, len(rows), 2000):
            r = client.post(
                "/admin/v1/events/import",
                json={"events": rows[start : start + 2000]},
                headers=tenant.admin,
            )
            assert r.status_code == 200 and not r.get_json()["rejected"], r.json
        touches = touch_columns(model)
        with app.app_context():
            from backend.services import policies
            from backend.store.models import Tenant, Touch, User

            row = Tenant.get(Tenant.appid == tenant.appid)
            policy = policies.create(row.id, {"policy": PROBE}, 0)
            ids = {
                o: i
                for i, o in User.select(User.id, User.openid).where(User.tenant == row.id).tuples()
            }
            log = model.campaign.log
            ret = log.column("return_ms", skipped=False)
            sent = log.column("sent_ms", skipped=False)
            keep = log.column("day", skipped=False) < first_day + WARMUP + DAYS
            ret, sent = ret[keep], sent[keep]
            Touch.insert_many(
                [
                    {
                        "tenant": row.id,
                        "policy": policy.id,
                        "user": ids[f"dev_sim{int(u) + 1:07d}"],
                        "day": int(d),
                        "arm": kind,
                        "step": 0,
                        "channel": ch,
                        "message": MESSAGES[kind],
                        "tier": tier,
                        "holdout": bool(h),
                        "status": "held_out" if h else "sent",
                        "send_after_ms": int(s),
                        "expires_ms": int(s) + 86_400_000,
                        "sent_ms": int(s),
                        "returned_ms": int(r) if r >= 0 else None,
                        "attributed": True,
                    }
                    for u, d, ch, kind, tier, h, s, r in zip(
                        touches.user,
                        touches.day,
                        touches.labels("channel"),
                        touches.labels("kind"),
                        touches.labels("tier"),
                        touches.holdout,
                        sent,
                        ret,
                        strict=True,
                    )
                    if f"dev_sim{int(u) + 1:07d}" in ids
                ]
            ).execute()
        out = tmp_path / "params.json"
        result = app.test_cli_runner().invoke(args=["calibrate", "--out", str(out)])
        assert result.exit_code == 0, result.output
    finally:
        close_app(app)
    fitted = SimParams.load(out)
    record = fitted.extra["response"]
    assert fitted.extra["calibrated_from"]["touches"] == touches.user.size
    first = touches.first_decisions()
    cells = {(c["kind"], c["tier"]): c for c in record["cells"]}
    kinds, tiers = first.labels("kind"), first.labels("tier")
    for kind, tier in set(zip(kinds.tolist(), tiers.tolist(), strict=True)):
        mine = (kinds == kind) & (tiers == tier)
        c = cells[kind, tier]
        assert (c["treated"], c["holdout"]) == (
            int((mine & ~first.holdout).sum()),
            int((mine & first.holdout).sum()),
        )
        assert c["treated_rate"] == pytest.approx(
            first.returned[mine & ~first.holdout].mean(), abs=1e-4
        )
        line = f"{kind:<9} {tier:<14} {c['treated']:>7} {c['holdout']:>7}"
        assert line in result.output, line
    fitted_kinds = [k for k, v in record["kinds"].items() if v["fitted"]]
    assert fitted_kinds, record["kinds"]
    rates = fitted.response_params().response
    for kind in fitted_kinds:
        k = MESSAGE_KINDS.index(kind)
        factor = record["kinds"][kind]["factor"]
        assert rates["regular"][k] == pytest.approx(min(1, RESPONSE["regular"][k] * factor), 1e-3)
    # At this size the bands are wide (a hundred or so first decisions a cell); each fitted
    # factor's band still holds the truth.
    for kind in fitted_kinds:
        k = record["kinds"][kind]
        assert abs(k["raw_factor"] - KNOWN[kind]) < 3 * k["factor_se"], (kind, k)
