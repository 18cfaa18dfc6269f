"""Simulation pages: pick or upload a policy, trial it against the presets on the tenant's
twin in a background worker, watch its progress, read the simulator's own report."""

from __future__ import annotations

from pathlib import Path

from flask import Response, current_app, g, jsonify, redirect, render_template, request, url_for

from backend.core.calendar import china_day
from backend.dashboard import bp
from backend.dashboard.session import login_required
from backend.errors import ApiError
from backend.services import policies, simulations
from backend.store.models import Policy as PolicyRow

# The presets a merchant's policy is measured against (the ones `make demo` compares).
COMPARE_PRESETS = ("coupon_blast", "tiered", "golden_window")
WARMUP_DAYS = 28
MAX_UPLOAD_BYTES = 64 * 1024
REPORT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'"
)


def _now_ms() -> int:
    return current_app.config["CLOCK"].now_ms()


@bp.get("/simulations")
@login_required
def simulation_list():
    return _list_page()


def _list_page(error: str | None = None, status: int = 200):
    saved = PolicyRow.select().where(PolicyRow.tenant == g.tenant_id).order_by(PolicyRow.name)
    now = _now_ms()
    return render_template(
        "dashboard/simulations.html",
        saved=[r.name for r in saved],
        presets=policies.preset_names(),
        compare_presets=COMPARE_PRESETS,
        runs=[simulations.status(r, now) for r in simulations.recent(g.tenant_id)],
        limits={"users": simulations.MAX_USERS, "days": simulations.MAX_DAYS},
        error=error,
        form=request.form,
    ), status


def _int_field(name: str, default: int, lo: int, hi: int) -> int:
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
    if kind == "preset" and name in policies.preset_names():
        return {"name": name, "source": None}
    raise ApiError(400, "invalid_policy", "choose a policy or upload a policy file")


@bp.post("/simulations")
@login_required
def simulation_start():
    try:
        chosen = _chosen_policy()
        users = _int_field("users", 1000, 100, simulations.MAX_USERS)
        days = _int_field("days", 60, 7, simulations.MAX_DAYS)
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
        "warmup": WARMUP_DAYS,
        "day": int(china_day(_now_ms())),
    }
    try:
        row = simulations.start(g.tenant_id, request_doc, _now_ms())
    except ApiError as exc:
        return _list_page(exc.message, exc.status)
    cfg = current_app.config
    try:
        simulations.launch(
            row.id,
            cfg["DATABASE_URL"],
            cfg["SECRET_KEY"],
            Path(current_app.instance_path) / "logs",
        )
    except OSError as exc:  # no worker: the row must not hold one of the tenant's slots
        simulations.fail(row.id, f"the worker could not start: {exc}", _now_ms())
        return _list_page("试算进程无法启动，请稍后再试", 503)
    return redirect(url_for("dashboard.simulation_page", run_id=row.id))


@bp.get("/simulations/<id:run_id>")
@login_required
def simulation_page(run_id: int):
    row = simulations.get(g.tenant_id, run_id)
    return render_template("dashboard/simulation.html", run=simulations.status(row, _now_ms()))


@bp.get("/simulations/<id:run_id>/status")
@login_required
def simulation_status(run_id: int):
    row = simulations.get(g.tenant_id, run_id)
    return jsonify(simulations.status(row, _now_ms()))


@bp.get("/simulations/<id:run_id>/report")
@login_required
def simulation_report(run_id: int):
    row = simulations.get(g.tenant_id, run_id)
    if row.status != "done" or not row.report_html:
        raise ApiError(404, "report_not_ready", "this simulation has no report yet")
    return Response(
        row.report_html,
        mimetype="text/html",
        headers={"Content-Security-Policy": REPORT_CSP},
    )
