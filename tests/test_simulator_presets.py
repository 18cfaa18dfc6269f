"""Every policy file in seeds/policies/ runs in the simulated campus, as it would in production.

The directory is enumerated, so a preset added later is covered without touching this test.
"""

from __future__ import annotations

import json

import pytest

from backend.core.policy import parse_policy
from backend.core.policy.spec import EVENT_TRIGGERS
from backend.core.seeds import POLICIES_DIR as PRESETS

FILES = sorted(PRESETS.glob("*.yaml"))


def test_the_presets_are_all_here():
    assert {"coupon_blast", "golden_window", "payment_failed", "tiered", "uplift"} <= {
        f.stem for f in FILES
    }


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_preset_runs_through_simulate(tmp_path, path):
    from backend.app import create_app

    policy = parse_policy(path.read_text(encoding="utf-8"))
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    out = tmp_path / "out.json"
    args = ["simulate", "--policy", str(path), "--users", "1200", "--days", "21"]
    args += ["--warmup", "21", "--seed", "4", "--json", str(out)]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads(out.read_text(encoding="utf-8"))
    arms = data["arms"]
    assert "holdout" in arms and arms["holdout"]["users"] > 0
    treated = [name for name in arms if name != "holdout"]
    assert treated and all(name in {a.name for a in policy.arms} for name in treated)
    assert sum(arms[name]["messages"] for name in treated) > 0
    assert set(data["uplift"]) == set(treated)
    daily = data["daily"]
    assert sum(daily["sent"]) > 0 and sum(daily["held_out"]) > 0
    if policy.rank_by == "uplift":
        # The learner is fitted once enough touches are final, and the days before it are
        # shown as ranked by risk: never a silent fallback.
        ranking = daily["uplift_ranking"]
        assert set(ranking) == {"risk", "model"}
        assert ranking.index("model") > 0 and "risk" not in ranking[ranking.index("model") :]
    else:
        assert set(daily["uplift_ranking"]) == {""}
    if policy.trigger in EVENT_TRIGGERS:
        # Decided from the campus's own events as they happen, day after day.
        assert sum(1 for sent in daily["sent"] if sent) > len(daily["sent"]) // 2
