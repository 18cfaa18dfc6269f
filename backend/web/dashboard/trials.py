"""Simulation pages: pick or upload a policy, trial it against the presets on the tenant's
twin on the task queue (backend/tasks/trials.py), watch its progress or cancel it, read the
simulator's own report."""

from __future__ import annotations

from flask import Response, current_app, g, jsonify, redirect, render_template, request, url_for

from backend.core import seeds
from backend.core.calendar import china_day
from backend.errors import ApiError
from backend.services import policies, simulations
from backend.tasks import trials as trial_tasks
from backend.web.dashboard.blueprint import bp
from backend.web.dashboard.session import login_required

# The presets a merchant's policy is measured against (the ones `make demo` compares).
COMPARE_PRESETS = ("coupon_blast", "tiered", "golden_window")
WARMUP_DAYS = 28
MAX_UPLOAD_BYTES = 64 * 1024
REPORT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'"
)


def _now_ms() -> int:
    """The app's clock (a fake one in tests and the simulator), never the wall's."""
    return current_app.config["CLOCK"].now_ms()


@bp.get("/simulations")
@login_required
def simulation_list():
    """Where a merchant trials a policy before running it on real users: the form and the recent
    trials."""
    return _list_page()


def default_size() -> simulations.TrialSize:
    """The default trial: the merchant's policy and the presets (four policies), sized so the
    closest presets are told apart (backend/services/simulations.py `default_size`)."""
    return simulations.default_size(len(COMPARE_PRESETS) + 1, WARMUP_DAYS)


def _list_page(error: str | None = None, status: int = 200):
    """The trials page, with the form as sent and an error when a start was refused."""
    saved = policies.all_rows(g.tenant_id)
    now = _now_ms()
    return render_template(
        "dashboard/simulations.html",
        saved=[r.name for r in saved],
        presets=seeds.preset_names(),
        compare_presets=COMPARE_PRESETS,
        runs=[simulations.status(r, now) for r in simulations.recent(g.tenant_id)],
        limits={
            "users": simulations.MAX_USERS,
            "days": simulations.MAX_DAYS,
            "replicates": simulations.MAX_REPLICATES,
        },
        size=default_size(),
        pilot=simulations.PILOT,
        error=error,
        form=request.form,
    ), status


def _int_field(name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number form field within bounds (400 otherwise), its default when left empty."""
    raw = request.form.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_field", f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_field", f"{name} must be between {lo} and {hi}")
    return value


def _chosen_policy() -> dict:
    """The policy to trial: an uploaded file, a text edited on the policy page, one of the
    tenant's saved ones, or a preset."""
    upload = request.files.get("policy_file")
    edited = request.form.get("source")
    if (upload is not None and upload.filename) or edited:
        data = edited.encode() if edited else upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            limit = f"a policy file is at most {MAX_UPLOAD_BYTES} bytes"
            raise ApiError(413, "policy_too_large", limit)
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_policy", "the policy file is not UTF-8 text") from None
        spec = policies.parse(source)
        return {"name": spec.name, "source": source}
    choice = request.form.get("policy", "")
    kind, _, name = choice.partition(":")
    if kind == "saved":
        row = policies.get(g.tenant_id, name)
        return {"name": row.name, "source": row.source}
    if kind == "preset" and name in seeds.preset_names():
        return {"name": name, "source": None}
    raise ApiError(400, "invalid_policy", "choose a policy or upload a policy file")


@bp.post("/simulations")
@login_required
def simulation_start():
    """Starts a trial in the background: a policy against the presets on the tenant's twin, sized
    to tell them apart."""
    try:
        chosen = _chosen_policy()
        size = default_size()
        users = _int_field("users", size.users, 100, simulations.MAX_USERS)
        days = _int_field("days", size.days, 7, simulations.MAX_DAYS)
        replicates = _int_field("replicates", size.replicates, 1, simulations.MAX_REPLICATES)
        seed = _int_field("seed", 0, 0, 2**31 - 1)
    except ApiError as exc:
        return _list_page(exc.message, exc.status)
    others = [
        {"name": p, "source": None}
        for p in COMPARE_PRESETS
        if not (chosen["source"] is None and chosen["name"] == p)
    ]
    names = [chosen["name"]] + [p["name"] for p in others]
    if len(set(names)) != len(names):  # a saved policy named like a preset: tell them apart
        chosen = {**chosen, "name": f"{chosen['name']}（本店）"}
    request_doc = {
        "policies": [chosen, *others],
        "users": users,
        "days": days,
        "seed": seed,
        "replicates": replicates,
        "warmup": WARMUP_DAYS,
        "day": int(china_day(_now_ms())),
    }
    try:
        row = simulations.start(g.tenant_id, request_doc, _now_ms())
    except ApiError as exc:
        return _list_page(exc.message, exc.status)
    try:
        trial_tasks.queue_trial(current_app._get_current_object(), g.tenant_id, row.id)
    except Exception as exc:  # noqa: BLE001 - the queue's storage unreachable, whatever its kind
        # Nothing will run it: the row must not hold one of the tenant's slots.
        simulations.fail(row.id, f"the task queue could not be reached: {exc}", _now_ms())
        return _list_page("试算任务无法启动，请稍后再试", 503)
    return redirect(url_for("dashboard.simulation_page", run_id=row.id))


@bp.post("/simulations/<id:run_id>/cancel")
@login_required
def simulation_cancel(run_id: int):
    """Stop a queued or running trial: its runs not started are skipped, a running one stops
    at its next progress report."""
    simulations.cancel(g.tenant_id, run_id, _now_ms())
    return redirect(url_for("dashboard.simulation_page", run_id=run_id))


@bp.get("/simulations/<id:run_id>")
@login_required
def simulation_page(run_id: int):
    """One trial: its progress while it runs, its verdict in plain words when done."""
    row = simulations.get(g.tenant_id, run_id)
    run = simulations.status(row, _now_ms())
    return render_template("dashboard/simulation.html", run=run, view=trial_view(run))


METRIC_ZH = {"profit": "利润", "students": "回访学生数", "revenue": "收入"}
UNKNOWN = "未知"


def _money(fen: float | None, signed: bool = True) -> str:
    """Fen as whole yuan with a sign (+¥1,200), for effects; unknown when not measured."""
    if fen is None:
        return UNKNOWN
    sign = ("+" if fen >= 0 else "-") if signed else ("-" if fen < 0 else "")
    return f"{sign}¥{abs(fen) / 100:,.0f}"


def _count(value: float | None, signed: bool = True) -> str:
    """A count with a sign (+12), for effects on students; unknown when not measured."""
    if value is None:
        return UNKNOWN
    v = round(value)
    return f"{v:+,d}" if signed and v else f"{v:,d}"


def _with_interval(e: dict | None, money: bool) -> str:
    """A paired effect with its 95% interval; unknown when the trial did not measure it."""
    if not e or e.get("value") is None:
        return UNKNOWN
    show = _money if money else _count
    return f"{show(e['value'])}（{show(e.get('lo'))} 至 {show(e.get('hi'))}）"


def _rate_n(rate: dict | None) -> str:
    """A rate with its n; with nobody to measure it is unknown, never 0."""
    if not rate or rate.get("rate") is None or not rate.get("n"):
        return f"{UNKNOWN}（n={(rate or {}).get('n') or 0}）"
    return f"{100 * rate['rate']:.1f}%（n={rate['n']:,}）"


def trial_view(run: dict) -> dict:
    """The finished trial as the page shows it: each policy's month and trial figures (the
    trial's total × 30/days), money spent beside committed, incremental beside gross, every
    pair with the smallest difference this size resolves, and each power warning, all
    formatted in the merchant's words; unknown values say 未知."""
    config = run.get("config") or {}
    days = run["days"]
    by = config.get("rank_by", "profit")
    money = by != "students"
    rows = []
    for r in run.get("ranking") or []:
        if "profit" not in r:  # a trial from before the twin's verdict
            rows.append({"policy": r.get("policy", UNKNOWN), "old": True})
            continue
        month = r.get("per_month") or {}
        h = r.get("holdout") or {}
        rows.append(
            {
                "policy": r["policy"],
                "old": False,
                "description": r.get("description") or "",
                "month_students": _with_interval(month.get("students"), False),
                "month_profit": _with_interval(month.get("profit"), True),
                "students": _with_interval(r.get("students"), False),
                "revenue": _with_interval(r.get("revenue"), True),
                "profit": _with_interval(r.get("profit"), True),
                "spent": _money((r.get("cost") or {}).get("value"), False),
                "committed": _money((r.get("committed_coupon_value") or {}).get("value"), False),
                "gross": _money(r.get("gross_revenue"), False),
                "recall": _rate_n(h.get("recall")),
                "holdout_recall": _rate_n(
                    {**(h.get("holdout_recall") or {}), "n": h.get("holdout_users")}
                ),
                "power": (run.get("power_zh") or {}).get(r["policy"], ""),
                "warning": (run.get("warnings_zh") or {}).get(r["policy"], ""),
            }
        )
    show = _money if money else _count
    pairs, least = [], []
    for v in run.get("verdict") or []:
        month = v.get("per_month")
        said = {
            "better": f"{v['a']} 优于 {v['b']}",
            "worse": f"{v['a']} 不如 {v['b']}",
        }.get(v["outcome"], f"{v['a']} 与 {v['b']} 分不出高下")
        if month:
            least.append(month["min_detectable"])
        pairs.append(
            {
                "said": said,
                "significant": v.get("significant", False),
                "difference": (
                    f"{show(month['difference'])}（{show(month['lo'])} 至 {show(month['hi'])}）"
                    if month
                    else UNKNOWN
                ),
                "min_detectable": show(month["min_detectable"], False) if month else UNKNOWN,
            }
        )
    if least:
        lo, hi = show(min(least), False), show(max(least), False)
        span = lo if lo == hi else f"{lo}–{hi}"
        resolves = (
            f"这个规模下能分辨的最小差异：每月 {span}（{METRIC_ZH.get(by, by)}，视策略对而定）"
        )
    else:
        resolves = ""
    month_days = config.get("month_days", 30)
    return {
        "rows": rows,
        "pairs": pairs,
        "metric": METRIC_ZH.get(by, by),
        "resolves": resolves,
        "month_note": (
            f"每月 = {days} 天试验的效果 × {month_days}/{days}（假定效果在试验期内均匀发生）"
        ),
        "margin": config.get("margin"),
        "warnings": [r["warning"] for r in rows if r.get("warning")],
    }


@bp.get("/simulations/<id:run_id>/status")
@login_required
def simulation_status(run_id: int):
    """The progress the trial page polls while the trial runs."""
    row = simulations.get(g.tenant_id, run_id)
    return jsonify(simulations.status(row, _now_ms()))


@bp.get("/simulations/<id:run_id>/report")
@login_required
def simulation_report(run_id: int):
    """The simulator's own report of a finished trial, under a strict CSP since it is generated
    HTML."""
    row = simulations.get(g.tenant_id, run_id)
    if row.status != "done" or not row.report_html:
        raise ApiError(404, "report_not_ready", "this simulation has no report yet")
    return Response(
        row.report_html,
        mimetype="text/html",
        headers={"Content-Security-Policy": REPORT_CSP},
    )
