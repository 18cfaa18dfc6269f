"""Calibration by recovery: a campus with known parameters is simulated, its users' events go
through the API into a fresh database, `calibrate` fits them back, and the fit is compared
with what was known."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers.app import build_app, close_app, make_tenant
from helpers.simulated_events import api_events

from backend.core.calendar import day_start_ms
from backend.core.clock import FixedClock, from_ms
from backend.core.policy.spec import MESSAGE_KINDS
from simulator.calibrate import calibrate_tenant
from simulator.calibrate_organic import Log, NotEnoughHistory, fit_organic, simulate_log
from simulator.e2e import ApiCampus
from simulator.model import CampusModel
from simulator.params import SimParams

USERS, DAYS, SEED = 1500, 56, 7  # eight weeks of spring term from Monday 2026-03-02
MP_USERS = 100  # these post through the phone's route; the rest arrive by historical import
APPID = "wxcalibrate000001"


def known_params() -> SimParams:
    """The defaults moved well outside the bands the test allows around them."""
    base = SimParams()
    personas = tuple(
        replace(
            p,
            visit_p=p.visit_p * 1.25,
            half_life_days=p.half_life_days * 0.7,
            order_p=p.order_p * 0.8,
            aov_fen=round(p.aov_fen * 1.3),
            aov_sigma=p.aov_sigma * 1.2,
        )
        for p in base.personas
    )
    return replace(base, personas=personas, weekend_factor=0.7)


def push(app, tenant, clock: FixedClock, model: CampusModel, first_day: int) -> None:
    """The first MP_USERS users log in on the first morning (the end-to-end mode's phones,
    `simulator.e2e.ApiCampus`: user row r is database id r + 1) and post each week's events
    at its end (the route takes events up to 7 days old, so the clock moves a week at a time;
    a request per user-day, as the end-to-end mode does, would take minutes). The others'
    events arrive through the admin's historical import, under the same openids."""
    events = api_events(model)
    clock.set(from_ms(day_start_ms(first_day) + 7 * 3_600_000))
    phones = ApiCampus(app, tenant.appid, tenant.api_key)
    phones.login_all(MP_USERS)
    weeks: dict[tuple[int, int], list[dict]] = {}
    for u, d, e in events:
        if u < MP_USERS:
            weeks.setdefault(((d - first_day) // 7, u), []).append(e)
    for week in range(-(-DAYS // 7)):
        clock.set(from_ms(day_start_ms(first_day + 7 * (week + 1))))
        for u in range(MP_USERS):
            if (week, u) in weeks:
                phones.events(u, weeks[week, u])  # raises if any event is refused
    # A user at a time, as a platform exports its history (fewer users per batch to update).
    by_user = sorted(events, key=lambda x: x[:2])
    rest = [{"user": f"dev_sim{u + 1:07d}", **e} for u, _, e in by_user if u >= MP_USERS]
    client = app.test_client()
    for start in range(0, len(rest), 2000):
        batch = {"events": rest[start : start + 2000]}
        r = client.post("/admin/v1/events/import", json=batch, headers=tenant.admin)
        assert r.status_code == 200 and not r.get_json()["rejected"], r.json


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """The known campus, lived for DAYS days and pushed into a fresh SQLite database."""
    model = CampusModel(users=USERS, seed=SEED, params=known_params())
    first_day = model.day
    for _ in range(DAYS):
        model.step()
    clock = FixedClock(from_ms(day_start_ms(first_day)))
    url = f"sqlite:///{tmp_path_factory.mktemp('calibrate') / 'huiliu.sqlite3'}"
    app = build_app(url, clock, TOKEN_TTL_S=10**8)
    tenant = make_tenant(app, APPID)
    push(app, tenant, clock, model, first_day)
    # The morning after the last simulated day: `calibrate` reads up to yesterday.
    clock.set(from_ms(day_start_ms(first_day + DAYS) + 9 * 3_600_000))
    yield app, tenant, model, first_day
    close_app(app)


@pytest.fixture
def campus(pushed):
    """The pushed campus's app (its app contexts use its own database)."""
    return pushed


@pytest.fixture(scope="module")
def calibrated(pushed, tmp_path_factory):
    """`python app.py calibrate --out FILE` on the pushed campus: (file, terminal output)."""
    app = pushed[0]
    out = tmp_path_factory.mktemp("params") / "params.json"
    result = app.test_cli_runner().invoke(args=["calibrate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def summary(p: SimParams) -> dict[str, float]:
    """Population figures: share-weighted over personas (medians geometrically)."""
    share = np.array([x.share for x in p.personas])

    def mean(name):
        return float(share @ np.array([getattr(x, name) for x in p.personas], dtype=float))

    return {
        "visit_p": mean("visit_p"),
        "half_life_days": mean("half_life_days"),
        "order_p": mean("order_p"),
        "median_order_fen": float(np.exp(share @ np.log([x.aov_fen for x in p.personas]))),
        "aov_sigma": mean("aov_sigma"),
        "weekend_factor": p.weekend_factor,
    }


# Allowed relative error of each fitted figure. Fitting twelve simulated campuses of 1500
# users over these eight weeks (other seeds) gave relative errors with standard deviations
# of 2.4% for the visit rate, 6.8% for the half-life (the slowest to show: most personas'
# half-lives are longer than the log), 1.0% for the order share, 0.5% for the median order
# value, 1.1% for sigma and 1.6% for the weekend factor. The bands are 4-5 of those, and
# each excludes the default the fit starts from.
BANDS = {
    "visit_p": 0.10,
    "half_life_days": 0.30,
    "order_p": 0.05,
    "median_order_fen": 0.025,
    "aov_sigma": 0.05,
    "weekend_factor": 0.07,
}


def test_calibration_recovers_the_campus_it_was_given(campus, calibrated):
    _, _, model, _ = campus
    path, output = calibrated
    fitted = SimParams.load(path)
    e = fitted.extra
    # What went through the API is what the campus did, day for day.
    ev, orders = model.log.columns()
    source = e["calibrated_from"]
    assert source["tenant"] == APPID and source["days"] == DAYS
    assert source["users"] == np.unique(ev.user).size
    assert source["visit_days"] == np.unique(ev.user * 10**6 + ev.day).size
    assert source["orders"] == orders.user.size
    assert e["fit"]["log_amount_mean"] == pytest.approx(np.log(orders.amount_fen).mean())

    known, got, default = summary(known_params()), summary(fitted), summary(SimParams())
    print(json.dumps({"known": known, "fitted": got}, indent=1))
    for name, band in BANDS.items():
        assert abs(got[name] / known[name] - 1) < band, (name, known[name], got[name])
        assert abs(default[name] / known[name] - 1) > band, name  # the test can fail
    assert e["fit"]["converged"]
    assert "no attributed touches" in e["response"] and fitted.response == {}
    assert {"share", "churn_base, churn_slope, revive_p"} <= set(e["kept_at_defaults"])
    assert [p.share for p in fitted.personas] == [p.share for p in SimParams().personas]
    assert "parameters written to" in output and "half-life" in output


def test_simulate_and_compare_run_with_the_calibrated_file(campus, calibrated, tmp_path):
    app = campus[0]
    path, _ = calibrated
    runner = app.test_cli_runner()
    sim_json = tmp_path / "sim.json"
    args = ["simulate", "--policy", "golden_window", "--users", "300", "--days", "5"]
    args += ["--warmup", "7", "--params", str(path), "--json", str(sim_json)]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert f"campus parameters: calibrated on {APPID}" in result.output
    assert json.loads(sim_json.read_text("utf-8"))["config"]["params"].startswith("calibrated")

    result = runner.invoke(args=["simulate", "--policy", "tiered", "--params", "nope.json"])
    assert result.exit_code != 0 and "no parameter file nope.json" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"personas": []}', encoding="utf-8")
    args = ["compare", "--policy", "tiered", "--policy", "golden_window", "--params", str(bad)]
    result = runner.invoke(args=args)
    assert result.exit_code != 0 and "not a simulator parameter file" in result.output


def test_too_little_history_is_a_clear_error(tmp_path):
    clock = FixedClock(from_ms(day_start_ms(20_530) + 9 * 3_600_000))
    app = build_app(f"sqlite:///{tmp_path / 'short.sqlite3'}", clock)
    try:
        tenant = make_tenant(app, "wxshort0000000001")
        client = app.test_client()
        today = 20_530
        events = [
            {"user": f"u{u}", "id": f"o{d}", "type": "app_open", "ts": day_start_ms(d) + 36e5 * 12}
            for u in range(150)
            for d in range(today - 10, today)
            if (u + d) % 3 == 0
        ]
        for e in events:
            e["ts"] = int(e["ts"])
        r = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
        assert r.status_code == 200 and not r.get_json()["rejected"]
        result = app.test_cli_runner().invoke(args=["calibrate", "--out", str(tmp_path / "x")])
        assert result.exit_code != 0
        assert "only 10 days of event history" in result.output
        assert "needs at least 28" in result.output
        assert not (tmp_path / "x").exists()

        make_tenant(app, "wxshort0000000002")
        result = app.test_cli_runner().invoke(args=["calibrate"])
        assert result.exit_code != 0 and "name one with --tenant" in result.output
        result = app.test_cli_runner().invoke(args=["calibrate", "--tenant", "wxnobody"])
        assert result.exit_code != 0 and "no tenant with appid wxnobody" in result.output
    finally:
        close_app(app)

    # A month of too few users is refused as well, by the library as by the command.
    sim = simulate_log(SimParams(), 60, 20_500, 20_540, seed=1)
    with pytest.raises(NotEnoughHistory, match="users visited"):
        fit_organic(sim.log)


def test_response_rates_follow_the_holdout_difference(campus):
    """Touches with a holdout: each kind's column of the response table is scaled by the
    observed effect over the effect the same policy has on the fitted campus against its
    untreated twin (docs/simulator.md; recovery of known rates: test_calibrate_response.py)."""
    app, tenant, model, first_day = campus
    rng = np.random.default_rng(3)
    with app.app_context():
        from backend.services import policies
        from backend.store.models import Policy, Tenant, Touch, User

        row = Tenant.get(Tenant.appid == APPID)
        policy = policies.create(row.id, {"preset": "golden_window"}, 0)
        ids = np.array([u for (u,) in User.select(User.id).where(User.tenant == row.id).tuples()])
        users = rng.choice(ids, 900, replace=False)
        holdout = np.arange(900) < 300
        # reminders (subscribe) gain 12 points on a 30% organic return; nothing else is sent
        returned = rng.random(900) < np.where(holdout, 0.30, 0.42)
        day = first_day + 40
        Touch.insert_many(
            [
                {
                    "tenant": row.id,
                    "policy": policy.id,
                    "user": int(u),
                    "day": day,
                    "arm": "subscribe_only",
                    "step": 0,
                    "channel": "subscribe",
                    "message": "saved_cart",
                    "tier": "churn_risk",
                    "holdout": bool(h),
                    "status": "held_out" if h else "sent",
                    "send_after_ms": day_start_ms(day),
                    "expires_ms": day_start_ms(day + 1),
                    "returned_ms": day_start_ms(day + 2) if r else None,
                    "attributed": True,
                }
                for u, h, r in zip(users, holdout, returned, strict=True)
            ]
        ).execute()
        try:
            fitted = calibrate_tenant(row, first_day + DAYS - 1)
        finally:
            Touch.delete().where(Touch.tenant == row.id).execute()
            Policy.delete().where(Policy.id == policy.id).execute()
    record = fitted.extra["response"]
    cell = {(c["kind"], c["tier"]): c for c in record["cells"]}["reminder", "churn_risk"]
    assert (cell["treated"], cell["holdout"]) == (600, 300) and cell["used"]
    effect = returned[~holdout].mean() - returned[holdout].mean()
    assert cell["effect"] == pytest.approx(effect, abs=1e-4)
    assert cell["lo"] < effect < cell["hi"]
    assert 0 < cell["simulated_effect"] < 0.3
    reminder = record["kinds"]["reminder"]
    assert reminder["fitted"]
    assert reminder["raw_factor"] == pytest.approx(effect / cell["simulated_effect"], rel=2e-3)
    assert not record["kinds"]["coupon"]["fitted"]  # none sent: kept
    defaults = SimParams().response_params().response
    k = MESSAGE_KINDS.index("reminder")
    for persona, rates in fitted.response["response"].items():
        want = min(1.0, defaults[persona][k] * reminder["factor"])
        assert rates[k] == pytest.approx(want, abs=1e-3)
        assert list(rates[:k]) == list(defaults[persona][:k])
    # The file carries them and the simulator reads them back.
    again = SimParams.from_json(fitted.to_json()).response_params()
    assert again.response["regular"][k] == fitted.response["response"]["regular"][k]


def test_the_log_counts_a_visit_as_a_day_with_any_event():
    from backend.core.columns import EventColumns, OrderColumns

    ev = EventColumns(
        user=np.array([0, 0, 0, 1]),
        day=np.array([5, 5, 6, 9]),
        hour=np.array([8, 9, 8, 8]),
        kind=np.array([1, 2, 1, 4], dtype=np.int8),
        duration_s=np.zeros(4),
    )
    orders = OrderColumns(
        user=np.array([0, 1]),
        day=np.array([5, 30]),
        amount_fen=np.array([100, 200]),
        used_coupon=np.zeros(2, dtype=bool),
    )
    log = Log.of(ev, orders, 2, 0, 20)
    assert list(zip(log.visit_user, log.visit_day, strict=True)) == [(0, 5), (0, 6), (1, 9)]
    assert list(log.amount_fen) == [100]  # the order after the window is left out


def test_a_file_without_response_overrides_still_loads(tmp_path):
    d = json.loads(SimParams().to_json())
    d.pop("response")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    p = SimParams.load(path)
    assert p.response == {} and p.response_params().fatigue == 0.75
    with pytest.raises(ValueError, match="unknown parameters"):
        SimParams(response={"nonsense": 1}).check()
