"""The dashboard's trial: the tenant's chosen policies compared on its calibrated twin.

The dashboard writes a run row (backend/services/simulations.py) and queues it
(backend/tasks/trials.py): `prepare` calibrates the twin once, each of `compare`'s runs (a
policy on a seed) is a task of its own (`run_part`, its answer kept in the database as bytes),
and `gather_parts` turns the answers into the comparison and its page. `run_trial` does the
same in one process (`python app.py run-simulation RUN_ID`). What a trial is lives here, not
in the tasks: the twin (calibrated from the tenant's own log, cached for a day; the built-in
campus when the log is too short), the tenant's own coupons priced beside the presets', and
the page's words and HTML.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np

from backend.services.policies import parse
from backend.services.scoring import latest_day
from backend.store.models import CouponTemplate, KeyValue
from simulator.calibrate import calibrate_tenant
from simulator.calibrate_organic import NotEnoughHistory
from simulator.html import power_zh, ranking_html, render, verdict_zh, warning_zh
from simulator.params import SimParams
from simulator.run import DEFAULT_COUPONS, compare, compare_runs, gather, load_policy, one_run

TWIN_CACHE_MS = 24 * 3600 * 1000  # a tenant's calibrated twin is reused for a day
# The page is served under /admin: its charts load the dashboard's own copies of the scripts.
PLOTLY_URL = "/admin/assets/plotly.min.js"
RENDER_URL = "/admin/assets/charts.js"
RESULT_KEY = "__result__"  # the npz member holding a part's JSON result

# report(fraction done, twin=None): the run row's progress, and once the twin it runs on.
Report = Callable[..., None]


def run_trial(row, report: Report, now_ms: Callable[[], int]) -> tuple[dict, str]:
    """Calibrate (or reuse) the twin, run every policy of the run's request on it, and
    render the report: the comparison (with the page's words) and its HTML page, all in
    this process (its runs spread over the cores, simulator/fanout.py).

    Parameters
    ----------
    row : the claimed `SimulationRun` row; `row.request` is the JSON the dashboard wrote
        (policies, users, days, warmup, seed, replicates, day).
    report : called with the fraction done, at most once a percent, and first with the twin.
    now_ms : the app's clock (the twin's cache expires by it).
    """
    request = json.loads(row.request)
    work, twin = prepare(row, now_ms)
    report(0.0, twin)
    params, coupons = _work(work)
    out = compare(
        _policies(request),
        request["users"],
        request["days"],
        request["seed"],
        request["warmup"],
        progress=_percent_progress(part_days(request) * part_count(request), report),
        params=params,
        coupons=coupons,
        replicates=request.get("replicates", 1),
    )
    return _with_words(out, twin)


def prepare(row, now_ms: Callable[[], int]) -> tuple[dict, dict]:
    """What every part of the trial runs on, as JSON (the twin's parameters and the coupons'
    prices, fixed once so that parts run on different workers, or again, agree), and what the
    page says about the twin."""
    request = json.loads(row.request)
    params, twin = twin_params(row.tenant, request["day"], now_ms)
    coupons = tenant_coupons(row.tenant_id)
    work = {
        "params": params.to_json() if params is not None else None,
        "coupons": {name: list(terms) for name, terms in coupons.items()},
    }
    return work, twin


def part_count(request: dict) -> int:
    """How many runs (parts) the trial has: each policy on each seed."""
    return len(request["policies"]) * request.get("replicates", 1)


def part_days(request: dict) -> int:
    """The days one part simulates (warm-up and trial), its share of the progress."""
    return request["warmup"] + request["days"]


def run_part(
    request: dict, work: dict, index: int, progress: Callable[[int], None] | None
) -> bytes:
    """The trial's run `index` (`compare_runs` order), its answer packed for the database."""
    params, coupons = _work(work)
    runs = compare_runs(
        _policies(request),
        request["users"],
        request["days"],
        request["seed"],
        request["warmup"],
        params,
        coupons,
        request.get("replicates", 1),
    )
    return pack_answer(one_run(*runs[index], progress))


def gather_parts(request: dict, work: dict, twin: dict, answers: list[bytes]) -> tuple[dict, str]:
    """The comparison and its page from every part's packed answer, in order: what
    `run_trial` gives for the same request."""
    params, _ = _work(work)
    out = gather(
        _policies(request),
        [unpack_answer(a) for a in answers],
        request["users"],
        request["days"],
        request["seed"],
        request["warmup"],
        params,
        request.get("replicates", 1),
    )
    return _with_words(out, twin)


def pack_answer(answer: tuple[dict | None, dict[str, np.ndarray]]) -> bytes:
    """A run's answer as bytes: its per-user arrays in an npz (no pickles), its result (or
    None) as JSON beside them. JSON keeps floats exactly, so the gathered output is the same
    bits as in one process."""
    result, effects = answer
    text = json.dumps(result, ensure_ascii=False).encode()
    buf = io.BytesIO()
    np.savez(buf, **effects, **{RESULT_KEY: np.frombuffer(text, dtype=np.uint8)})
    return buf.getvalue()


def unpack_answer(data: bytes) -> tuple[dict | None, dict[str, np.ndarray]]:
    """`pack_answer` undone."""
    with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    result = json.loads(arrays.pop(RESULT_KEY).tobytes().decode())
    return result, arrays


def _policies(request: dict) -> list:
    """The request's policies, parsed as production parses a merchant's."""
    return [
        parse(p["source"]) if p.get("source") else load_policy(p["name"])
        for p in request["policies"]
    ]


def _work(work: dict) -> tuple[SimParams | None, dict[str, tuple[int, int]]]:
    """`prepare`'s JSON back as the simulator takes it (coupon terms are tuples)."""
    params = SimParams.from_json(work["params"]) if work.get("params") else None
    return params, {name: tuple(terms) for name, terms in work["coupons"].items()}


def _with_words(out: dict, twin: dict) -> tuple[dict, str]:
    """The comparison with the page's words (the verdict a month, each policy's holdout power
    and its warning) and the report page."""
    out["twin"] = twin
    out["summary_zh"] = verdict_zh(out)
    out["power_zh"] = {r["policy"]: power_zh(r["policy"], r["power"]) for r in out["ranking"]}
    out["warnings_zh"] = {
        r["policy"]: warning_zh(r["policy"], r["power"]) for r in out["ranking"] if r["warning"]
    }
    page = render(out["results"], ranking=ranking_html(out), script_urls=(PLOTLY_URL, RENDER_URL))
    return out, page


def _percent_progress(total: int, report: Report) -> Callable[[int], None]:
    """`compare`'s per-day progress as at most one report a percent: each is a write to the
    run row (the page's bar and the worker's heartbeat)."""
    done = 0
    last = 0.0

    def progress(steps: int) -> None:
        nonlocal done, last
        done += steps
        if done / total - last >= 0.01:
            last = done / total
            report(min(last, 0.99))

    return progress


def tenant_coupons(tenant_id: int) -> dict[str, tuple[int, int]]:
    """What a coupon costs in the trial, by template name: (face value, minimum spend) in fen.
    The tenant's own templates, beside the presets' coupon, so its policies are priced as its
    merchants would pay."""
    coupons = dict(DEFAULT_COUPONS)
    templates = CouponTemplate.select().where(CouponTemplate.tenant == tenant_id)
    coupons.update({t.name: (t.amount_off_fen, t.min_spend_fen) for t in templates})
    return coupons


def twin_params(tenant, day: int, now_ms: Callable[[], int]) -> tuple[SimParams | None, dict]:
    """The tenant's calibrated parameters as of the day before `day` (or its last scored day,
    if the log stops earlier), cached for a day; the built-in campus (None) when its log is
    too short to fit. The dict beside them is what the page says about the twin (`source`:
    calibrated or defaults, and a `note`)."""
    as_of = min(day - 1, latest_day(tenant.id) or day - 1)
    key = f"twin:{tenant.id}:{as_of}"
    cached = KeyValue.get_or_none(KeyValue.key == key)
    if cached is not None and (cached.expires_ms or 0) > now_ms():
        stored = json.loads(cached.value)
        params = SimParams.from_json(stored["params"]) if stored["params"] else None
        return params, stored["twin"]
    try:
        params = calibrate_tenant(tenant, as_of)
        twin = {"source": "calibrated", "note": params.extra.get("summary", "")}
    except NotEnoughHistory as exc:
        params = None
        twin = {"source": "defaults", "note": f"built-in campus: {exc}"}
    value = json.dumps({"params": params.to_json() if params else None, "twin": twin})
    expires = now_ms() + TWIN_CACHE_MS
    KeyValue.insert(key=key, value=value, expires_ms=expires).on_conflict(
        conflict_target=[KeyValue.key],
        update={KeyValue.value: value, KeyValue.expires_ms: expires},
    ).execute()
    return params, twin
