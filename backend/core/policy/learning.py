"""What a policy has learnt from its finished touches: bandit posteriors and the stop-loss.

The campaign job folds the touches it reads from the database, the simulator the touches in
its books; both call `learnt_state`, so an arm is paused, or a bandit moves traffic, by one rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from backend.core.policy.decide import PolicyState
from backend.core.policy.guards import stop_loss
from backend.core.policy.spec import Policy
from backend.core.tiers import TIERS


@dataclass
class LearningTotals:
    """Running sums per arm (and per arm × tier for the bandit) over finished sent touches."""

    successes: np.ndarray  # (arms × tiers)
    failures: np.ndarray
    cost_fen: np.ndarray  # per arm: message cost plus redeemed coupon value
    value_fen: np.ndarray  # per arm: value of the users it brought back
    touches: np.ndarray

    @classmethod
    def empty(cls, arms: int) -> LearningTotals:
        """Nothing learnt yet, for a policy with `arms` arms."""
        return cls(
            np.zeros((arms, len(TIERS))),
            np.zeros((arms, len(TIERS))),
            np.zeros(arms),
            np.zeros(arms),
            np.zeros(arms, dtype=np.int64),
        )

    def add(self, arm, tier, returned, spent_fen, value_fen) -> None:
        """Fold touches in: `arm` indexes the policy's arms (-1 rows, other policies', are
        ignored), `tier` indexes TIERS, `value_fen` is the user's value when decided."""
        arm = np.asarray(arm, dtype=np.int64)
        keep = arm >= 0
        arm, tier = arm[keep], np.asarray(tier, dtype=np.int64)[keep]
        returned = np.asarray(returned, dtype=bool)[keep]
        k = self.touches.size
        np.add.at(self.successes, (arm[returned], tier[returned]), 1)
        np.add.at(self.failures, (arm[~returned], tier[~returned]), 1)
        value = np.asarray(value_fen, dtype=np.float64)[keep][returned]
        self.value_fen += np.bincount(arm[returned], weights=value, minlength=k)
        spent = np.asarray(spent_fen, dtype=np.float64)[keep]
        self.cost_fen += np.bincount(arm, weights=spent, minlength=k)
        self.touches += np.bincount(arm, minlength=k)

    def state(self, policy: Policy, coupon_face_fen: Mapping[str, int]) -> PolicyState:
        """Paused arms (stop-loss) and the bandit's posteriors."""
        state = PolicyState.fresh(policy, coupon_face_fen)
        state.successes[:] = self.successes
        state.failures[:] = self.failures
        state.paused = stop_loss(
            self.cost_fen,
            self.value_fen,
            self.touches,
            policy.stop_loss_ratio,
            policy.stop_loss_min_touches,
        )
        return state


def learnt_state(
    policy: Policy,
    coupon_face_fen: Mapping[str, int],
    arm: np.ndarray,
    tier: np.ndarray,
    returned: np.ndarray,
    spent_fen: np.ndarray,
    value_fen: np.ndarray,
) -> PolicyState:
    """The state after the given touches: sent ones whose attribution window has closed."""
    totals = LearningTotals.empty(len(policy.arms))
    totals.add(arm, tier, returned, spent_fen, value_fen)
    return totals.state(policy, coupon_face_fen)


__all__ = ["LearningTotals", "learnt_state"]
