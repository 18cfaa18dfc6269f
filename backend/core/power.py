"""Power: how big a holdout, and how long, for a policy's comparison to mean anything.

The classic normal-approximation sample size for a two-sided test of two independent
proportions (Fleiss, Levin & Paik 2003, "Statistical Methods for Rates and Proportions",
3rd ed., §4.2, eq. 4.14; Fleiss, Tytun & Ury 1980, Biometrics 36:343-346), WITHOUT the
continuity correction unless asked: the pooled variance under H0, the unpooled variance
under H1. It is the formula of R's `power.prop.test` (strict = FALSE) and of statsmodels'
`samplesize_proportions_2indep_onetail`; docs/metrics.md pins their published examples.

Rates are fractions (0.05 = 5 percentage points); group sizes are users. The live report
(services/report_power.py), the simulator and the paired verdict (core.paired: its level and
power are PLAN_ALPHA and PLAN_POWER) all plan here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PLAN_ALPHA = 0.05
PLAN_POWER = 0.8


def _z(alpha: float, power: float) -> tuple[float, float]:
    """z_{1−α/2} (two-sided) and z_{power}; scipy.special is imported here, not at load."""
    from scipy.special import ndtri

    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be strictly between 0 and 1")
    return float(ndtri(1 - alpha / 2)), float(ndtri(power))


def _clip(p: float) -> float:
    """A rate kept inside [0, 1] (an observed or predicted rate may step outside it)."""
    return min(1.0, max(0.0, float(p)))


def _n_control(
    p0: float, p1: float, ratio: float, alpha: float, power: float, continuity: bool = False
) -> float:
    """Control-group size (a real number) for n_treated = ratio · n_control.

    With r = ratio, p̄ = (p0 + r·p1)/(1 + r), q = 1 − p, Δ = |p1 − p0|:
        n0 = [z_{1−α/2}·√(p̄q̄(1 + 1/r)) + z_{1−β}·√(p0q0 + p1q1/r)]² / Δ²
    and with the continuity correction (Fleiss, Tytun & Ury 1980):
        n0' = n0/4 · [1 + √(1 + 2(r + 1)/(n0·r·Δ))]².
    Infinite when Δ is 0.
    """
    za, zb = _z(alpha, power)
    delta = abs(p1 - p0)
    if delta <= 0:
        return math.inf
    pbar = (p0 + ratio * p1) / (1 + ratio)
    null_sd = math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio))
    alt_sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1) / ratio)
    n = (za * null_sd + zb * alt_sd) ** 2 / delta**2
    if continuity:
        n = n / 4 * (1 + math.sqrt(1 + 2 * (ratio + 1) / (n * ratio * delta))) ** 2
    return n


def sample_size_two_proportions(
    p_control: float,
    p_treated: float,
    *,
    ratio: float = 1.0,
    alpha: float = PLAN_ALPHA,
    power: float = PLAN_POWER,
    continuity_correction: bool = False,
) -> tuple[int, int]:
    """(n_control, n_treated), n_treated = ratio · n_control, for a two-sided test at `alpha`
    to detect p_treated against p_control with probability `power`.

    Fleiss's formula (Fleiss, Levin & Paik 2003, eq. 4.14) without continuity correction by
    default — pooled variance under H0, unpooled under H1 — each group rounded up:
        n_c = [z_{1−α/2}·√(p̄q̄(1 + 1/r)) + z_{1−β}·√(p_c q_c + p_t q_t / r)]² / (p_t − p_c)²,
        p̄ = (p_c + r·p_t)/(1 + r).
    Equal groups at p 0.10 vs 0.15, α 0.05, 80% → 686 each; R's documented
    `power.prop.test(p1 = .5, p2 = .75, power = .9)` → n = 76.7 (77 here). Rates are clipped to
    [0, 1]. Raises ValueError when the rates are equal (no sample detects a zero difference).
    """
    if ratio <= 0:
        raise ValueError("ratio must be positive")
    n = _n_control(_clip(p_control), _clip(p_treated), ratio, alpha, power, continuity_correction)
    if math.isinf(n):
        raise ValueError("p_treated equals p_control: no sample size detects no difference")
    return math.ceil(n - 1e-9), math.ceil(n * ratio - 1e-9)


def power_two_proportions(
    p_control: float,
    p_treated: float,
    n_control: float,
    n_treated: float,
    *,
    alpha: float = PLAN_ALPHA,
) -> float:
    """The probability that the two-sided test at `alpha` detects p_treated vs p_control with
    these group sizes: Φ((|Δ|·√n_c − z_{1−α/2}·√(p̄q̄(1 + 1/r))) / √(p_c q_c + p_t q_t / r)),
    r = n_t/n_c — the same equation solved for power, ignoring the far tail (as R's
    `power.prop.test` does by default: n = 50 at 0.5 vs 0.75 → 0.740)."""
    from scipy.special import ndtr

    if n_control <= 0 or n_treated <= 0:
        return 0.0
    p0, p1 = _clip(p_control), _clip(p_treated)
    r = n_treated / n_control
    za, _ = _z(alpha, 0.5)
    pbar = (p0 + r * p1) / (1 + r)
    null_sd = math.sqrt(pbar * (1 - pbar) * (1 + 1 / r))
    alt_sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1) / r)
    if alt_sd == 0:  # both rates 0 or 1 under H1: detected iff they differ
        return 1.0 if p0 != p1 else 0.0
    return float(ndtr((abs(p1 - p0) * math.sqrt(n_control) - za * null_sd) / alt_sd))


def detectable_effect(
    p_control: float,
    n_control: int,
    n_treated: int,
    *,
    alpha: float = PLAN_ALPHA,
    power: float = PLAN_POWER,
) -> float | None:
    """The minimum detectable effect (MDE): the smallest increase Δ in the rate that groups of
    n_control and n_treated detect at `alpha` (two-sided) with probability `power`.

    Solves sample_size_two_proportions' equation n_c(p_c, p_c + Δ, r = n_t/n_c) = n_c for Δ
    (Brent's method on (0, 1 − p_c]). None when a group is empty or not even a rise to 100%
    could be detected (tiny samples, or p_control already 1).
    """
    from scipy.optimize import brentq

    p0 = _clip(p_control)
    if n_control <= 0 or n_treated <= 0 or p0 >= 1:
        return None
    ratio = n_treated / n_control

    def gap(delta: float) -> float:
        return _n_control(p0, p0 + delta, ratio, alpha, power) - n_control

    top = 1.0 - p0
    if gap(top) > 0:
        return None
    low = min(1e-9, top / 2)
    return float(brentq(gap, low, top, xtol=1e-12, rtol=1e-10))


@dataclass(frozen=True)
class PowerPlan:
    """How far a policy's holdout comparison is from detecting a predicted effect.

    effect and rates are fractions (0.05 = 5 percentage points). *_needed are None when the
    effect cannot be detected at all (zero or negative effect, no holdout); days_needed is
    the days still needed from the current size at `eligible_per_day` new users a day, None
    when that is unreachable within max_days (or the volume is 0).
    """

    effect: float
    p_control: float
    p_treated: float
    holdout_share: float
    alpha: float
    power: float
    n_holdout_needed: int | None
    n_treated_needed: int | None
    users_needed: int | None
    eligible_per_day: float
    days_needed: int | None
    max_days: int
    n_holdout_now: int
    n_treated_now: int
    detectable_now: float | None
    note: str = ""

    @property
    def users_now(self) -> int:
        """Users in the comparison so far, holdout and treated together."""
        return self.n_holdout_now + self.n_treated_now

    @property
    def share_of_needed(self) -> float | None:
        """Users so far over users needed (1.0 and above: the planned size is reached)."""
        if not self.users_needed:
            return None
        return self.users_now / self.users_needed

    def as_dict(self) -> dict:
        """The plan as plain JSON values, with the derived `users_now` and `share_of_needed`."""
        return {
            **asdict(self),
            "users_now": self.users_now,
            "share_of_needed": self.share_of_needed,
        }


def holdout_plan(
    p_control: float,
    effect: float,
    holdout_share: float,
    eligible_per_day: float,
    *,
    alpha: float = PLAN_ALPHA,
    power: float = PLAN_POWER,
    max_days: int = 365,
    n_holdout_now: int = 0,
    n_treated_now: int = 0,
) -> PowerPlan:
    """Users and days a policy needs for its holdout comparison to detect `effect` (rate
    points over p_control) at `power`, and the effect detectable at today's size.

    Holdout = control, treated = the rest: ratio r = (1 − h)/h for holdout share h, and
    (n_holdout_needed, n_treated_needed) = sample_size_two_proportions(p_c, p_c + effect, r);
    users_needed is their sum (≈ n_holdout_needed / h). Days still needed at V new users a
    day: ceil(max((n_h − n_h_now)/(V·h), (n_t − n_t_now)/(V·(1 − h)))), 0 once both are met.
    """
    p0 = _clip(p_control)
    p1 = _clip(p0 + effect)
    h = float(holdout_share)
    n_h_now, n_t_now = max(0, int(n_holdout_now)), max(0, int(n_treated_now))
    rate = max(0.0, float(eligible_per_day))
    detectable = detectable_effect(p0, n_h_now, n_t_now, alpha=alpha, power=power)
    common = dict(
        effect=float(effect),
        p_control=p0,
        p_treated=p1,
        holdout_share=h,
        alpha=alpha,
        power=power,
        eligible_per_day=rate,
        max_days=int(max_days),
        n_holdout_now=n_h_now,
        n_treated_now=n_t_now,
        detectable_now=detectable,
    )
    none = dict(n_holdout_needed=None, n_treated_needed=None, users_needed=None, days_needed=None)
    if not 0 < h < 1:
        return PowerPlan(**common, **none, note="no holdout: the effect cannot be measured")
    if p1 <= p0:
        return PowerPlan(
            **common, **none, note="no increase to detect (effect zero, negative or at 100%)"
        )
    n_h, n_t = sample_size_two_proportions(p0, p1, ratio=(1 - h) / h, alpha=alpha, power=power)
    missing_h, missing_t = max(0, n_h - n_h_now), max(0, n_t - n_t_now)
    days: int | None
    note = ""
    if missing_h == 0 and missing_t == 0:
        days = 0
    elif rate <= 0:
        days, note = None, "no new users are being decided: the size will not grow"
    else:
        need = max(missing_h / (rate * h), missing_t / (rate * (1 - h)))
        days = math.ceil(need - 1e-9)
        if days > max_days:
            days, note = None, f"more than {max_days} days at the current volume"
    return PowerPlan(
        **common,
        n_holdout_needed=n_h,
        n_treated_needed=n_t,
        users_needed=n_h + n_t,
        days_needed=days,
        note=note,
    )
