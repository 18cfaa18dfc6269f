"""The tables. Times are UTC epoch milliseconds (BigInteger); money is integer fen."""

from __future__ import annotations

import secrets

import peewee as pw

from backend.store.db import database


class NeverReusedAutoField(pw.AutoField):
    """An integer id no later row can get again once its row is deleted.

    SQLite's plain rowid hands the highest id out again after that row is deleted (an erased
    user's id would go to the next sign-up); AUTOINCREMENT keeps a high-water mark instead.
    PostgreSQL's sequences never go back, so nothing is added there.
    """

    def ddl(self, ctx):
        node_list = super().ddl(ctx)
        db = getattr(self.model._meta.database, "obj", self.model._meta.database)
        if isinstance(db, pw.SqliteDatabase):
            return pw.NodeList((node_list, pw.SQL("AUTOINCREMENT")))
        return node_list


def new_token_key() -> str:
    """A user's random token key: tokens carry it, erasure destroys it with the row."""
    return secrets.token_hex(16)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = pw.IntegerField(primary_key=True)
    applied_ms = pw.BigIntegerField()


class Tenant(BaseModel):
    """One mini-program (appid) run by one merchant team."""

    appid = pw.CharField(max_length=64, unique=True)
    name = pw.CharField(max_length=200)
    settings = pw.TextField(default="{}")  # JSON: per-tenant thresholds and calendar
    created_ms = pw.BigIntegerField()
    # Dashboard login besides the API key: a salted hash set by `set-dashboard-password`.
    dashboard_password_hash = pw.CharField(max_length=255, null=True)


class ApiKey(BaseModel):
    """An admin API key: only a lookup prefix and a SHA-256 of the secret are stored."""

    tenant = pw.ForeignKeyField(Tenant, backref="api_keys", on_delete="CASCADE")
    prefix = pw.CharField(max_length=16, unique=True)
    key_hash = pw.CharField(max_length=64)
    label = pw.CharField(max_length=100, default="")
    created_ms = pw.BigIntegerField()
    revoked_ms = pw.BigIntegerField(null=True)


class User(BaseModel):
    id = NeverReusedAutoField()
    tenant = pw.ForeignKeyField(Tenant, backref="users", on_delete="CASCADE")
    openid = pw.CharField(max_length=128)
    unionid = pw.CharField(max_length=128, null=True)
    created_ms = pw.BigIntegerField()
    last_seen_ms = pw.BigIntegerField(null=True)
    marketing_opt_out = pw.BooleanField(default=False)
    phone = pw.CharField(max_length=20, null=True)  # for the SMS channel; set by the merchant
    oa_openid = pw.CharField(max_length=128, null=True)  # Official Account follower id
    # Every login token names this key; a token is only good for the row that holds it.
    token_key = pw.CharField(max_length=32, default=new_token_key)

    class Meta:
        indexes = ((("tenant", "openid"), True),)


class Merchant(BaseModel):
    """A shop on the platform (canteen window, snack shop); orders name one."""

    tenant = pw.ForeignKeyField(Tenant, backref="merchants", on_delete="CASCADE")
    code = pw.CharField(max_length=64)
    name = pw.CharField(max_length=200)

    class Meta:
        indexes = ((("tenant", "code"), True),)


class Event(BaseModel):
    id = pw.BigAutoField()
    # No single-column indexes on the foreign keys: the compound indexes below lead with
    # them, and every event insert would pay for two more index updates.
    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE", index=False)
    user = pw.ForeignKeyField(User, backref="events", on_delete="CASCADE", index=False)
    client_id = pw.CharField(max_length=64)  # the phone's event id: the idempotency key
    type = pw.CharField(max_length=64)
    ts_ms = pw.BigIntegerField()  # when it happened (skew-corrected), UTC
    received_ms = pw.BigIntegerField()
    props = pw.TextField(default="{}")

    class Meta:
        indexes = (
            (("user", "client_id"), True),
            (("tenant", "ts_ms"), False),
            (("user", "ts_ms"), False),
        )


class CouponTemplate(BaseModel):
    """满减 coupon: amount off above a minimum spend, with a total budget of coupons."""

    tenant = pw.ForeignKeyField(Tenant, backref="coupon_templates", on_delete="CASCADE")
    name = pw.CharField(max_length=100)
    amount_off_fen = pw.BigIntegerField()
    min_spend_fen = pw.BigIntegerField(default=0)
    validity_days = pw.IntegerField()
    budget = pw.IntegerField()  # how many coupons may ever be issued
    issued_count = pw.IntegerField(default=0)
    per_user_limit = pw.IntegerField(default=1)
    merchant = pw.ForeignKeyField(Merchant, null=True, on_delete="RESTRICT")
    claimable = pw.BooleanField(default=False)  # users may claim it themselves
    active = pw.BooleanField(default=True)
    created_ms = pw.BigIntegerField()

    class Meta:
        constraints = [
            pw.SQL("CHECK (issued_count >= 0 AND issued_count <= budget)"),
            pw.SQL("CHECK (amount_off_fen > 0)"),
        ]


class Coupon(BaseModel):
    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    template = pw.ForeignKeyField(CouponTemplate, backref="coupons", on_delete="RESTRICT")
    user = pw.ForeignKeyField(User, backref="coupons", on_delete="CASCADE")
    seq = pw.IntegerField()  # 1..per_user_limit: the unique index enforces the limit
    status = pw.CharField(max_length=16, default="issued")  # issued | redeemed
    source = pw.CharField(max_length=16)  # admin | claim | policy
    issued_ms = pw.BigIntegerField()
    expires_ms = pw.BigIntegerField()
    redeemed_ms = pw.BigIntegerField(null=True)
    order_ref = pw.CharField(max_length=64, null=True)
    # The phone's idempotency key for a claim (the SDK's): a claim resent after a lost
    # answer finds its coupon instead of taking another. NULL for every other issue.
    request_id = pw.CharField(max_length=64, null=True)

    class Meta:
        indexes = (
            (("template", "user", "seq"), True),
            # One order redeems one coupon (NULLs, unredeemed coupons, are distinct).
            (("tenant", "order_ref"), True),
            (("user", "request_id"), True),
        )


class Order(BaseModel):
    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")  # NULL once erased
    order_ref = pw.CharField(max_length=64)
    merchant = pw.ForeignKeyField(Merchant, null=True, on_delete="RESTRICT")
    amount_fen = pw.BigIntegerField()
    coupon = pw.ForeignKeyField(Coupon, null=True, on_delete="SET NULL")
    paid_ms = pw.BigIntegerField()
    status = pw.CharField(max_length=16, default="paid")  # paid | refunded

    class Meta:
        indexes = ((("tenant", "order_ref"), True), (("tenant", "paid_ms"), False))


class SubscriptionAllowance(BaseModel):
    """How many one-time subscribe messages of a template the user still allows."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, backref="allowances", on_delete="CASCADE")
    template_id = pw.CharField(max_length=128)
    remaining = pw.IntegerField(default=0)
    last_result = pw.CharField(max_length=16)  # accept | reject | ban | filter
    updated_ms = pw.BigIntegerField()

    class Meta:
        indexes = ((("user", "template_id"), True),)
        constraints = [pw.SQL("CHECK (remaining >= 0)")]


class SubscriptionGrant(BaseModel):
    """One recorded wx.requestSubscribeMessage answer; its id makes retries harmless."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    request_id = pw.CharField(max_length=64)
    results = pw.TextField()
    created_ms = pw.BigIntegerField()

    class Meta:
        indexes = ((("user", "request_id"), True),)


class ConsentLog(BaseModel):
    """Every marketing opt-out/opt-in, kept as evidence of what the user asked."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, backref="consents", on_delete="CASCADE")
    action = pw.CharField(max_length=16)  # opt_out | opt_in
    at_ms = pw.BigIntegerField()


class ScoreSnapshot(BaseModel):
    """One user's scores and tier on one China day (`day`: days since 1970-01-01)."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    day = pw.IntegerField()
    tier = pw.CharField(max_length=16)
    reason = pw.CharField(max_length=32)
    activity_index = pw.FloatField()
    baseline = pw.FloatField()
    warning = pw.BooleanField()
    r = pw.SmallIntegerField()
    f = pw.SmallIntegerField()
    m = pw.SmallIntegerField()
    segment = pw.CharField(max_length=16)
    p_alive = pw.FloatField(null=True)  # NULL when no model could be fitted
    expected_orders = pw.FloatField()
    value_fen = pw.BigIntegerField()
    worth_recalling = pw.BooleanField()
    days_since_visit = pw.IntegerField()
    term_days_since_visit = pw.IntegerField()
    days_since_order = pw.IntegerField()
    age_days = pw.IntegerField()
    visit_days_30 = pw.IntegerField()
    orders_total = pw.IntegerField()
    spend_fen_total = pw.BigIntegerField()
    invites_total = pw.IntegerField()
    content_total = pw.IntegerField()
    usual_hour = pw.SmallIntegerField()

    class Meta:
        indexes = ((("tenant", "day", "user"), True), (("user", "day"), False))


class ModelFit(BaseModel):
    """The BG/NBD parameters fitted for a tenant on a day."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    day = pw.IntegerField()
    r = pw.FloatField()
    alpha = pw.FloatField()
    a = pw.FloatField()
    b = pw.FloatField()
    loglik = pw.FloatField()
    n = pw.IntegerField()

    class Meta:
        indexes = ((("tenant", "day"), True),)


class NightlyState(BaseModel):
    """A tenant's nightly scoring state (core.score_state) kept between nights, so the next
    night loads only its recent days' events (services/nightly_state.py). One state per
    tenant: an .npz of plain arrays (read back without pickle) split into parts, each row
    carrying the same JSON header that says what the state describes."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    part = pw.IntegerField()
    header = pw.TextField()
    data = pw.BlobField()

    class Meta:
        indexes = ((("tenant", "part"), True),)


class Policy(BaseModel):
    """A recall policy of a tenant: its YAML text as written, and whether it runs."""

    tenant = pw.ForeignKeyField(Tenant, backref="policies", on_delete="CASCADE")
    name = pw.CharField(max_length=64)
    source = pw.TextField()  # the YAML (or JSON) text, exactly as submitted
    active = pw.BooleanField(default=False)
    version = pw.IntegerField(default=1)
    uplift_model = pw.TextField(null=True)  # JSON of the fitted two-model learner
    created_ms = pw.BigIntegerField()
    updated_ms = pw.BigIntegerField()

    class Meta:
        indexes = ((("tenant", "name"), True),)


class CampaignRun(BaseModel):
    """One run of the campaign job for a tenant and day (dry runs are not stored)."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    day = pw.IntegerField()
    started_ms = pw.BigIntegerField()
    finished_ms = pw.BigIntegerField(null=True)
    status = pw.CharField(max_length=16)  # running | done | failed
    summary = pw.TextField(default="{}")  # JSON counts

    class Meta:
        indexes = ((("tenant", "day"), False),)


# The Touch statuses of a touch the policy decided to send, whatever became of it: what a run
# budget bounds and a report's ledger counts as sends (a holdout's is held_out, a guard rail's
# skipped).
SEND_STATUSES = ("queued", "sending", "sent", "failed", "expired")


class Touch(BaseModel):
    """One decided touch: a message to send (the outbox), a holdout "would have sent", or a
    guard rail that stopped it. Unique per (policy, user, day, step): deciding twice is a no-op.
    """

    # tenant, policy and user are covered by the compound indexes below that lead with them.
    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE", index=False)
    policy = pw.ForeignKeyField(Policy, backref="touches", on_delete="CASCADE", index=False)
    run = pw.ForeignKeyField(CampaignRun, null=True, on_delete="SET NULL")
    user = pw.ForeignKeyField(User, backref="touches", on_delete="CASCADE", index=False)
    day = pw.IntegerField()  # China day it was decided for
    arm = pw.CharField(max_length=64)
    step = pw.SmallIntegerField()
    channel = pw.CharField(max_length=16)
    message = pw.CharField(max_length=64)
    coupon_template = pw.CharField(max_length=100, null=True)
    tier = pw.CharField(max_length=16)
    holdout = pw.BooleanField()
    # queued | sending | sent | held_out | skipped | failed | expired (SEND_STATUSES: the sends)
    status = pw.CharField(max_length=16)
    reason = pw.CharField(max_length=32, default="")  # why skipped / failed
    send_after_ms = pw.BigIntegerField()
    expires_ms = pw.BigIntegerField()  # not sent by then: expired, never sent late
    attempts = pw.SmallIntegerField(default=0)
    next_attempt_ms = pw.BigIntegerField(default=0)
    lease_until_ms = pw.BigIntegerField(null=True)
    # Fencing: a random token written by each claim; only the holder of the current claim may
    # send or record the touch (a deliverer whose lease ran out finds it changed).
    claim_token = pw.CharField(max_length=32, null=True)
    # Set in the one write just before the channel is called, cleared when its outcome is
    # recorded: a lapsed claim with it set may have reached the student, so it is never sent
    # again (services/delivery.py).
    send_started_ms = pw.BigIntegerField(null=True)
    sent_ms = pw.BigIntegerField(null=True)  # or when a holdout touch "would have" gone
    wechat_errcode = pw.IntegerField(null=True)
    provider_id = pw.CharField(max_length=64, null=True)  # WeChat msgid, SMS id
    coupon = pw.ForeignKeyField(Coupon, null=True, on_delete="SET NULL")
    message_cost_fen = pw.BigIntegerField(default=0)
    value_fen = pw.BigIntegerField(default=0)  # the user's estimated value when decided
    # Attribution, filled when the window closes or the user returns.
    returned_ms = pw.BigIntegerField(null=True)
    ordered_ms = pw.BigIntegerField(null=True)
    revenue_fen = pw.BigIntegerField(default=0)
    coupon_cost_fen = pw.BigIntegerField(default=0)
    attributed = pw.BooleanField(default=False)  # window closed: the outcome is final
    opened_ms = pw.BigIntegerField(null=True)  # in-app card shown / message opened
    quiet_deferred = pw.BooleanField(default=False)  # quiet hours moved it to 08:00
    # Retention after the return (docs/metrics.md): NULL until the week has passed.
    retained_d7 = pw.BooleanField(null=True)
    retained_d30 = pw.BooleanField(null=True)

    class Meta:
        indexes = (
            (("policy", "user", "day", "step"), True),
            (("tenant", "status", "next_attempt_ms"), False),
            (("user", "day"), False),
            (("tenant", "day"), False),
        )


class SmsMessage(BaseModel):
    """The development SMS provider's outbox: what a vendor would have been asked to send."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    touch = pw.ForeignKeyField(Touch, null=True, on_delete="SET NULL", unique=True)
    phone = pw.CharField(max_length=20)
    text = pw.TextField()
    created_ms = pw.BigIntegerField()


class JobLock(BaseModel):
    """A named lock row: two campaign runs for one tenant cannot both hold it."""

    name = pw.CharField(max_length=100, primary_key=True)
    holder = pw.CharField(max_length=100)
    expires_ms = pw.BigIntegerField()


class TaskFailure(BaseModel):
    """A background task that failed for good (its retries spent): what a platform team's
    status page lists. `key` names what it was for (a China day, a trial)."""

    task = pw.CharField(max_length=64)
    tenant = pw.ForeignKeyField(Tenant, null=True, on_delete="CASCADE")
    key = pw.CharField(max_length=64, default="")
    error = pw.TextField()
    attempts = pw.IntegerField(default=1)
    failed_ms = pw.BigIntegerField()

    class Meta:
        indexes = ((("task", "tenant", "key"), False),)


class KeyValue(BaseModel):
    """Small shared state across workers (the WeChat access token cache)."""

    key = pw.CharField(max_length=200, primary_key=True)
    value = pw.TextField()
    expires_ms = pw.BigIntegerField(null=True)


class SimulationRun(BaseModel):
    """A policy trial started from the dashboard: a `compare` on the tenant's twin, run by a
    background process that reports its progress here."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")
    created_ms = pw.BigIntegerField()
    updated_ms = pw.BigIntegerField()  # the worker's heartbeat
    status = pw.CharField(max_length=16)  # queued | running | done | failed | cancelled
    progress = pw.FloatField(default=0.0)  # 0..1
    request = pw.TextField()  # JSON: policies (name, source), users, days, seed
    twin = pw.TextField(default="{}")  # JSON: which parameters the twin ran on, and why
    result = pw.TextField(null=True)  # JSON: the comparison, as `compare --json` writes it
    report_html = pw.TextField(null=True)  # the simulator's report page, linking plotly.js
    error = pw.TextField(null=True)

    class Meta:
        indexes = ((("tenant", "created_ms"), False),)


class SimulationPart(BaseModel):
    """One run of a trial (a policy on a seed, `index` in `compare_runs` order), computed as a
    task of its own and gathered once every part is done (backend/tasks/trials.py). Its lease
    is `updated_ms`: a running part whose worker stopped reporting is queued again."""

    tenant = pw.ForeignKeyField(Tenant, on_delete="CASCADE")  # the run's, so rows say whose
    run = pw.ForeignKeyField(SimulationRun, on_delete="CASCADE")
    index = pw.IntegerField()
    status = pw.CharField(max_length=16)  # queued | running | done | cancelled
    days_done = pw.IntegerField(default=0)  # simulated days, for the run's progress
    work = pw.TextField()  # JSON: what every part runs on (the twin's parameters, coupons)
    answer = pw.BlobField(null=True)  # the run's answer: an npz of arrays and a JSON result
    updated_ms = pw.BigIntegerField()

    class Meta:
        indexes = ((("run", "index"), True), (("status", "updated_ms"), False))


ALL_MODELS: list[type[BaseModel]] = [
    Tenant,
    ApiKey,
    User,
    Merchant,
    Event,
    CouponTemplate,
    Coupon,
    Order,
    SubscriptionAllowance,
    SubscriptionGrant,
    ConsentLog,
    KeyValue,
    ScoreSnapshot,
    ModelFit,
    NightlyState,
    Policy,
    CampaignRun,
    Touch,
    SmsMessage,
    JobLock,
    SimulationRun,
    TaskFailure,
    SimulationPart,
]
