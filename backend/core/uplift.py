"""Uplift: how much a touch changes a user's chance of coming back (two-model learner).

The playbooks target users most likely to leave; Ascarza (2018, "Retention Futility") shows
that the users most at risk are often not the ones a message moves. A two-model (T-learner)
estimate: one logistic regression of "returned within the window" on treated touches, one
on holdout touches, uplift = P(return | treated, x) − P(return | holdout, x). Fitted by
Newton's method (IRLS) with a small ridge penalty, in numpy: no scikit-learn for 8 columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

FEATURES = [
    "log_days_silent",
    "visit_days_30",
    "log_orders",
    "log_spend_yuan",
    "p_alive",
    "activity_index",
    "worth_recalling",
    "night_owl",
]


def uplift_features(
    term_days_silent,
    visit_days_30,
    orders_total,
    spend_fen_total,
    p_alive,
    activity_index,
    worth_recalling,
    usual_hour,
) -> np.ndarray:
    """(users × FEATURES): columns of the daily score snapshot, on scales a linear model can
    use (so the backend and the simulator build them from the same stored scores)."""
    hour = np.asarray(usual_hour)
    p = np.asarray(p_alive, dtype=np.float64)
    cols = [
        np.log1p(np.asarray(term_days_silent, dtype=np.float64)),
        np.asarray(visit_days_30, dtype=np.float64),
        np.log1p(np.asarray(orders_total, dtype=np.float64)),
        np.log1p(np.asarray(spend_fen_total, dtype=np.float64) / 100.0),
        np.where(np.isnan(p), 0.5, p),
        np.asarray(activity_index, dtype=np.float64) / 100.0,
        np.asarray(worth_recalling, dtype=np.float64),
        ((hour >= 21) | ((hour >= 0) & (hour < 5))).astype(np.float64),
    ]
    return np.column_stack(cols)


@dataclass(frozen=True)
class UpliftModel:
    """A fitted two-model uplift learner: the standardisation and both regressions.

    `mean`/`scale`: per FEATURES column, what the features were standardised with;
    `treated`/`control`: logistic coefficients (intercept first) on treated and holdout
    touches; `n_treated`/`n_control`: the touches each was fitted on.
    """

    mean: np.ndarray
    scale: np.ndarray
    treated: np.ndarray  # intercept first
    control: np.ndarray
    n_treated: int
    n_control: int

    def as_dict(self) -> dict:
        """Plain JSON values (with the feature names), as a policy's stored model is kept."""
        return {
            "features": FEATURES,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "treated": self.treated.tolist(),
            "control": self.control.tolist(),
            "n_treated": self.n_treated,
            "n_control": self.n_control,
        }

    @classmethod
    def from_dict(cls, d: dict) -> UpliftModel:
        """The model `as_dict` stored."""
        return cls(
            np.array(d["mean"]),
            np.array(d["scale"]),
            np.array(d["treated"]),
            np.array(d["control"]),
            int(d["n_treated"]),
            int(d["n_control"]),
        )


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1.0, iters: int = 50) -> np.ndarray:
    """Ridge-penalised logistic regression by Newton's method; the intercept is not penalised."""
    design = np.column_stack([np.ones(len(x)), x])
    beta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], ridge)
    penalty[0] = 0.0
    y = np.asarray(y, dtype=np.float64)
    for _ in range(iters):
        p = expit(design @ beta)
        grad = design.T @ (y - p) - penalty * beta
        hess = (
            (design * (p * (1 - p))[:, None]).T @ design
            + np.diag(penalty)
            + 1e-9 * np.eye(len(beta))
        )
        delta = np.linalg.solve(hess, grad)
        beta += delta
        if np.max(np.abs(delta)) < 1e-8:
            break
    return beta


def fit_two_model(
    x: np.ndarray, treated: np.ndarray, returned: np.ndarray, ridge: float = 1.0
) -> UpliftModel:
    """Fit on past touches: features at decision time, treated or holdout, returned or not.

    Parameters
    ----------
    x : (touches × FEATURES) float64, `uplift_features` of each touch's user at decision.
    treated : bool per touch (False: held out).
    returned : bool per touch, the user returned within the window.
    ridge : the L2 penalty on the standardised coefficients.
    """
    x = np.asarray(x, dtype=np.float64)
    treated = np.asarray(treated, dtype=bool)
    returned = np.asarray(returned, dtype=bool)
    if treated.sum() < 10 or (~treated).sum() < 10:
        raise ValueError("need at least 10 treated and 10 holdout outcomes to estimate uplift")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    return UpliftModel(
        mean,
        scale,
        fit_logistic(z[treated], returned[treated], ridge),
        fit_logistic(z[~treated], returned[~treated], ridge),
        int(treated.sum()),
        int((~treated).sum()),
    )


def predict_uplift(model: UpliftModel, x: np.ndarray) -> np.ndarray:
    """How much a touch is predicted to raise each user's chance of returning.

    Parameters
    ----------
    model : the fitted learner.
    x : (users × FEATURES) float64, as `uplift_features` builds them.

    Returns
    -------
    float64 per user: P(return | treated, x) − P(return | holdout, x), in [−1, 1].
    """
    design = np.column_stack(
        [np.ones(len(x)), (np.asarray(x, dtype=np.float64) - model.mean) / model.scale]
    )
    return expit(design @ model.treated) - expit(design @ model.control)


def risk_instead_of_uplift(p_alive: np.ndarray) -> np.ndarray:
    """What an uplift policy ranks by before it has a model: risk, 1 − P(alive) (0.5 where
    the churn model could not say), so it still runs — and can be compared — from day one."""
    p = np.asarray(p_alive, dtype=np.float64)
    return np.where(np.isnan(p), 0.5, 1.0 - p)
