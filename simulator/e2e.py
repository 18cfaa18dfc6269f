"""End-to-end mode: the simulated campus living through the real backend.

The same model as the fast mode (its organic days, responses and books), but:

* its users log in through the mini-program API (`POST /mp/v1/login`; database user id =
  row + 1, the user key the fast mode hashes), and every visit, order, subscribe grant, coupon
  redemption and opt-out goes through the API at its simulated time, on the app's clock;
* each morning the backend's own `score` and `run-campaigns` jobs run (`services.scoring`,
  `services.campaigns.job.run`) on the database, and their decisions are read back from the touch
  table; delivery runs hour by hour through the channel layer, into a sink that hands each
  message to its simulated user;
* results are read from the database by the production report (`services.reports`);
* `rank_by: uplift`: the merchant's procedure (`Campaign.refit_uplift`'s schedule) is followed
  through the admin API, `POST /admin/v1/policies/{name}/uplift-model`, before the job;
* a trigger policy (`payment_failed`) is switched on when the trial starts (after warm-up),
  the users' failed payments are posted as events and production decides in the request
  (`on_events`); its delivery, a task on the queue in production, runs in the request
  here so the clock is the simulation's.

For the same seed the two modes must make the same decisions for the same users on the same
days (tests/test_simulator_e2e.py): that is what lets a merchant trust the fast mode.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from backend.core import seeds
from backend.core.calendar import china_day, china_hour, day_start_ms
from backend.core.clock import FixedClock, from_ms
from backend.core.policy import HOLDOUT, REASONS, SEND, SKIPPED, Decisions, Policy
from backend.core.policy.guards import HOUR_MS
from backend.core.policy.spec import CHANNELS
from backend.core.uplift import UpliftModel
from backend.services import coupons, delivery, policies, reports, scoring, tenants
from backend.services.campaigns import job as campaign_job
from backend.services.channels import channels_for
from backend.store import db as store_db
from backend.store.migrations import migrate
from backend.store.models import Tenant, Touch
from backend.tasks import delivery as task_delivery
from backend.web.app import create_web_app
from simulator.campaign import nothing_decided
from simulator.model import CampusModel
from simulator.results import play
from simulator.touch_log import VISIT_MINUTE, job_ms

STATUS = {"queued": SEND, "sending": SEND, "sent": SEND, "failed": SEND, "expired": SEND}
STATUS |= {"held_out": HOLDOUT, "skipped": SKIPPED}


class DeliverySink:
    """Wraps the real channels: each message they accept is recorded for its simulated user."""

    def __init__(self, channels: dict) -> None:
        self.channels = {name: self._wrap(name, ch) for name, ch in channels.items()}
        self.delivered: list[tuple[int, int, str, int]] = []  # (touch, user id, channel, ms)

    def _wrap(self, name: str, inner):
        sink = self

        class Recorded:
            def send(self, touch, to, message, template_id, now_ms):
                out = inner.send(touch, to, message, template_id, now_ms)
                if out.kind == "sent":
                    sink.delivered.append((touch.id, touch.user_id, name, now_ms))
                return out

        return Recorded()


class ApiCampus:
    """The simulated users' phones: the mini-program API through the app's WSGI stack."""

    def __init__(self, app, appid: str, api_key: str) -> None:
        self.app = app
        self.client = app.test_client()
        self.appid = appid
        self.admin = {"X-Api-Key": api_key}
        self.tokens: list[str] = []
        self.openids: list[str] = []

    def _ok(self, resp, what: str) -> dict:
        if resp.status_code >= 400:
            raise RuntimeError(f"{what}: HTTP {resp.status_code} {resp.get_json()}")
        return resp.get_json()

    def _login(self, row: int) -> str:
        body = self._ok(
            self.client.post(
                "/mp/v1/login",
                json={"code": f"sim{row + 1:07d}"},
                headers={"X-Huiliu-Appid": self.appid},
            ),
            "login",
        )
        return f"Bearer {body['token']}"

    def login_all(self, n: int) -> None:
        """Users in row order, so the database gives row r the id r + 1."""
        for row in range(n):
            self.tokens.append(self._login(row))
            self.openids.append(f"dev_sim{row + 1:07d}")

    def _as_user(self, row: int, method: str, url: str, **kwargs):
        """A request with the user's token; an expired token means logging in again, as the
        mini-program does."""
        for _ in range(2):
            headers = {"Authorization": self.tokens[row]}
            resp = getattr(self.client, method)(url, headers=headers, **kwargs)
            if resp.status_code != 401:
                return resp
            self.tokens[row] = self._login(row)
        return resp

    def contact(self, row: int, phone: bool, follows_oa: bool) -> None:
        """The merchant records the user's phone and Official Account follow (admin API)."""
        body = {}
        if phone:
            body["phone"] = f"+86138{row:08d}"
        if follows_oa:
            body["oa_openid"] = f"oa_sim{row + 1:07d}"
        if body:
            self._ok(
                self.client.patch(
                    f"/admin/v1/users/{self.openids[row]}/contact", json=body, headers=self.admin
                ),
                "contact",
            )

    def events(self, row: int, events: list[dict]) -> None:
        """The user's mini-program posts its events; a refused one stops the run."""
        body = self._ok(
            self._as_user(row, "post", "/mp/v1/events", json={"events": events}),
            "events",
        )
        if body.get("rejected"):
            raise RuntimeError(f"events of user {row + 1} refused: {body}")

    def grant(self, row: int, templates: list[str]) -> None:
        """The user accepts a subscribe prompt for these templates."""
        results = {t: "accept" for t in templates}
        self._ok(
            self._as_user(row, "post", "/mp/v1/subscriptions", json={"results": results}),
            "subscriptions",
        )

    def redeem(self, row: int, coupon_id: int, order_id: str, amount_fen: int) -> None:
        """The user pays an order with a recall coupon."""
        self._ok(
            self._as_user(
                row,
                "post",
                f"/mp/v1/coupons/{coupon_id}/redeem",
                json={"order_id": order_id, "order_amount_fen": int(amount_fen)},
            ),
            "redeem",
        )

    def opt_out(self, row: int) -> None:
        """The user turns recall messages off."""
        self._ok(self._as_user(row, "post", "/mp/v1/me/opt-out"), "opt-out")


def new_backend(
    db_path: Path,
    appid: str,
    policy: Policy,
    policy_source: str,
    start_day: int,
    active: bool = True,
):
    """A fresh app and database with one campus tenant, the demo coupons and `policy` (live
    unless `active` is false)."""
    clock = FixedClock(from_ms(day_start_ms(start_day)))
    app = create_web_app(
        {
            "DATABASE_URL": f"sqlite:///{db_path}",
            "CLOCK": clock,
            "SECRET_KEY": "simulated-campus",
            "WECHAT_MODE": "dev",
            "WECHAT_APPID": "",
            "TESTING": True,
            # Tasks (an event trigger's delivery) run in the request: nothing is left queued.
            "QUEUE_URL": "memory://",
        }
    )
    spec = yaml.safe_load(seeds.DEMO_TENANT.read_text(encoding="utf-8"))
    with app.app_context():
        now = clock.now_ms()
        migrate(store_db.database, now)
        tenant, key = tenants.create(appid, "simulated campus", now)
        for m in spec["merchants"]:
            tenants.add_merchant(tenant.id, m["code"], m["name"])
        for t in spec["coupon_templates"]:
            coupons.create_template(tenant.id, t, now)
        policies.create(tenant.id, {"source": policy_source, "active": active}, now)
    return app, clock, tenant.id, key


class EndToEndModel(CampusModel):
    """The campus model whose users act through the API and whose job is the backend's."""

    def __init__(
        self,
        policy: Policy,
        policy_source: str,
        db_path: Path,
        users: int = 300,
        seed: int = 0,
        warmup_days: int = 0,
        appid: str = "wxsimulatedcampus",
        **kwargs,
    ) -> None:
        super().__init__(
            users=users,
            seed=seed,
            policy=policy,
            warmup_days=warmup_days,
            salt=appid,
            coupon_face_fen=kwargs.pop("coupon_face_fen", None) or coupon_terms(),
            **kwargs,
        )
        # A trigger policy fires on events, warm-up's too: it goes live with the trial.
        self.switched_on = not (self.campaign.listens and warmup_days > 0)
        self.app, self.clock, self.tenant_id, key = new_backend(
            db_path, appid, policy, policy_source, self.day, active=self.switched_on
        )
        self.api = ApiCampus(self.app, appid, key)
        self.clock.set(from_ms(day_start_ms(self.day) + 5 * 60_000))
        self.api.login_all(users)
        p = self.campaign.permissions
        for row in np.flatnonzero(p.has_phone | p.follows_oa):
            self.api.contact(int(row), bool(p.has_phone[row]), bool(p.follows_oa[row]))
        with self.app.app_context():
            self.sink = DeliverySink(channels_for(self.app))
        self.job_summaries: list[dict] = []

    # -- the morning -----------------------------------------------------------------------

    def nightly(self, as_of: int) -> None:
        """The backend scores the database every morning too (its `score` job)."""
        super().nightly(as_of)
        self.clock.set(from_ms(job_ms(as_of) - 60_000))
        with self.app.app_context():
            scoring.score_tenant(Tenant.get_by_id(self.tenant_id), as_of)

    def run_job(self, day: int) -> Decisions:
        """The backend's own morning job (`run-campaigns` without delivery) decides, after
        the merchant's uplift fit and a trigger policy's switch-on; its decisions are read
        back from the touch table and booked in the model."""
        self.fit_uplift(day)
        self.switch_on(day)
        self.clock.set(from_ms(job_ms(day)))
        with self.app.app_context():
            tenant = Tenant.get_by_id(self.tenant_id)
            summary = campaign_job.run(tenant, day, job_ms(day), seed=self.seed, deliver=None)
            self.job_summaries.append(summary)
            d = self.decisions_from_database(day)
        # The model's books follow the backend's decisions (its responses and ground truth).
        self.campaign.last_users = self.campaign.user_state(day, self.scores)
        self.campaign.book(day, d, self.scores)
        return d

    def fit_uplift(self, day: int) -> None:
        """The merchant's fit through the admin API, on the fast mode's schedule: a 409 (too
        few finished outcomes) leaves the policy ranking by risk, as in production."""
        if not self.campaign.uplift_due(day):
            return
        self.clock.set(from_ms(job_ms(day) - 30_000))
        name = self.campaign.policy.name
        resp = self.api.client.post(
            f"/admin/v1/policies/{name}/uplift-model", headers=self.api.admin
        )
        if resp.status_code == 409:
            self.campaign.record_fit(day, None, resp.get_json()["error"]["message"])
            return
        body = self.api._ok(resp, "uplift-model")
        self.campaign.record_fit(day, UpliftModel.from_dict(body))

    def switch_on(self, day: int) -> None:
        """A trigger policy goes live on the trial's first morning."""
        if self.switched_on:
            return
        with self.app.app_context():
            policies.set_active(self.tenant_id, self.campaign.policy.name, True, job_ms(day))
        self.switched_on = True

    def run_triggers(self, day: int) -> Decisions:
        """The trigger decisions production took in the day's event requests, read back from
        the touch table and booked as they were written (sent at the request's time)."""
        with self.app.app_context():
            d = self.decisions_from_database(day)
            when = np.zeros(len(self.state), dtype=np.int64)
            for t in Touch.select().where((Touch.tenant == self.tenant_id) & (Touch.day == day)):
                when[t.user_id - 1] = t.sent_ms if t.sent_ms is not None else t.send_after_ms
        triggered = np.flatnonzero(self.payment_failed)
        self.campaign.last_users = self.campaign.user_state(day, self.scores, triggered)
        self.campaign.book(day, d, self.scores, sent_ms=when)
        return d

    def decisions_from_database(self, day: int) -> Decisions:
        """The job's decisions for `day`, read back from the touch table, per user row."""
        n = len(self.state)
        d = nothing_decided(n)
        arms = {a.name: i for i, a in enumerate(self.campaign.policy.arms)}
        rows = Touch.select().where((Touch.tenant == self.tenant_id) & (Touch.day == day))
        for t in rows:
            i = t.user_id - 1
            d.status[i] = STATUS[t.status]
            d.reason[i] = REASONS.index(t.reason) if t.status == "skipped" else 0
            d.arm[i] = arms[t.arm]
            d.step[i] = t.step
            d.channel[i] = CHANNELS.index(t.channel)
            if t.status != "skipped":
                d.send_hour[i] = int(china_hour(t.send_after_ms))
                d.defer_days[i] = int(china_day(t.send_after_ms)) - day
                d.quiet_deferred[i] = t.quiet_deferred
        return d

    # -- the day -----------------------------------------------------------------------------

    def after_day(self, day: int) -> None:
        """Replay the day through the API, hour by hour: due messages are delivered on the
        hour, the users whose usual hour it is act at VISIT_MINUTE past it."""
        today, hour_of = self.today, self.state.usual_hour.astype(np.int64)
        grants = self.campaign.last_grants
        redeemed = self.campaign.log.redeemed_today
        start = day_start_ms(day)
        with self.app.app_context(), self.delivering_in_request():
            tenant = Tenant.get_by_id(self.tenant_id)
            for hour in range(24):
                self.clock.set(from_ms(start + hour * HOUR_MS))
                delivery.deliver_due(tenant, self.sink.channels, clock=self.clock)
                at = start + hour * HOUR_MS + VISIT_MINUTE * 60_000
                self.clock.set(from_ms(at))
                for row in np.flatnonzero(today.visited & (hour_of == hour)).tolist():
                    coupon = redeemed.get(row)
                    if coupon is not None:
                        touch = Touch.get(
                            (Touch.tenant == self.tenant_id)
                            & (Touch.user == row + 1)
                            & (Touch.day == coupon[0])
                            & (Touch.step == coupon[1])
                        )
                        self.api.redeem(
                            row, touch.coupon_id, f"sim-{day}-{row}", today.amount_fen[row]
                        )
                    self.api.events(row, self._visit_events(day, row, at))
                    accepted = [t for t, ok in grants.items() if ok[row]]
                    if accepted:
                        self.api.grant(row, accepted)
            self.clock.set(from_ms(start + 23 * HOUR_MS + 50 * 60_000))
            for row in np.flatnonzero(self.opt_out_day == day).tolist():
                self.api.opt_out(row)

    @contextmanager
    def delivering_in_request(self):
        """An event trigger's delivery (a task on the queue in production,
        `backend.tasks.delivery.after_trigger`) runs in the request instead: the same
        `deliver_due`, at the simulation's clock, into the sink."""

        def after_trigger(app, tenant_id: int) -> None:
            delivery.deliver_due(Tenant.get_by_id(tenant_id), self.sink.channels, clock=self.clock)

        original, task_delivery.after_trigger = task_delivery.after_trigger, after_trigger
        try:
            yield
        finally:
            task_delivery.after_trigger = original

    def _visit_events(self, day: int, row: int, at: int) -> list[dict]:
        key = f"{day}-{row}"
        events = [
            {"id": f"o-{key}", "type": "app_open", "ts": at},
            {
                "id": f"s-{key}",
                "type": "session_end",
                "ts": at,
                "props": {"duration_s": float(self.session_s[row])},
            },
        ]
        if self.payment_failed[row]:  # a first attempt failed; the retry below went through
            events.append({"id": f"f-{key}", "type": "payment_failed", "ts": at})
        if self.today.ordered[row]:
            events.append(
                {
                    "id": f"p-{key}",
                    "type": "order_paid",
                    "ts": at,
                    "props": {
                        "order_id": f"sim-{day}-{row}",
                        "amount_fen": int(self.today.amount_fen[row]),
                    },
                }
            )
        return events

    # -- results -----------------------------------------------------------------------------

    def report(self) -> dict:
        """The production report over the database, as `python app.py report --json` gives."""
        self.clock.set(from_ms(job_ms(self.day)))
        with self.app.app_context():
            return reports.report(self.tenant_id, None, None, None)

    def delivered_by_channel(self) -> dict[str, int]:
        """Messages the channels accepted, by channel (what the sink recorded)."""
        return dict(Counter(ch for _, _, ch, _ in self.sink.delivered))

    def close(self) -> None:
        """The run is over: the model's worker thread ends and the backend's database closes
        (its file stays, for reading afterwards)."""
        super().close()
        db = self.app.extensions["database"]
        if hasattr(db, "close_all"):
            db.close_all()
        elif not db.is_closed():
            db.close()


def coupon_terms() -> dict[str, tuple[int, int]]:
    """(face value, minimum spend) of the demo tenant's coupons: what the e2e tenant issues."""
    spec = yaml.safe_load(seeds.DEMO_TENANT.read_text(encoding="utf-8"))
    return {t["name"]: (t["amount_off_fen"], t["min_spend_fen"]) for t in spec["coupon_templates"]}


__all__ = ["ApiCampus", "DeliverySink", "EndToEndModel", "coupon_terms"]


MAX_E2E_USERS = 2000  # every visit is an HTTP request: this mode is for small campuses


def run_end_to_end(
    policy: Policy,
    policy_source: str,
    users: int,
    days: int,
    seed: int,
    warmup: int,
    folder: Path,
    progress=None,
    params=None,
) -> dict:
    """`simulate --e2e`: the contract's output from the model's books, plus the production
    report read from the end-to-end database (`backend_report`) and what was delivered."""
    if users > MAX_E2E_USERS:
        raise ValueError(
            f"end-to-end mode drives every visit through the API; use at most "
            f"{MAX_E2E_USERS} users (got {users}), or the fast mode for more"
        )
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / f"e2e-{policy.name}-{seed}.db"
    db_path.unlink(missing_ok=True)
    model = EndToEndModel(
        policy, policy_source, db_path, users=users, seed=seed, warmup_days=warmup, params=params
    )
    try:
        arms, uplift, daily = play(model, warmup + days, progress)
        return {
            "config": {
                "policy": policy.name,
                "users": users,
                "days": days,
                "seed": seed,
                "warmup_days": warmup,
                "mode": "end-to-end",
                "database": str(db_path),
            },
            "arms": arms,
            "uplift": uplift,
            "daily": daily.iloc[warmup:].to_dict(orient="list"),
            "backend_report": model.report(),
            "delivered": model.delivered_by_channel(),
        }
    finally:
        model.close()
