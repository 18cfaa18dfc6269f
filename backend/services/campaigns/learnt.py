"""What a policy has learnt so far, from its finished touches in the touch table."""

from __future__ import annotations

import numpy as np

from backend.core.policy import Policy, PolicyState
from backend.core.policy.learning import learnt_state
from backend.core.tiers import TIERS
from backend.services import policies
from backend.services.campaigns.columns import named
from backend.store.models import Policy as PolicyRow
from backend.store.models import Touch

# The finished touches' columns the learning reads, by name.
_COLUMNS = {
    "arm": Touch.arm,
    "tier": Touch.tier,
    "returned": Touch.returned_ms.is_null(False),
    "spent_fen": Touch.message_cost_fen + Touch.coupon_cost_fen,
    "value_fen": Touch.value_fen,
}


def policy_state(tenant_id: int, row: PolicyRow, policy: Policy) -> PolicyState:
    """Bandit posteriors per (arm, tier) and stop-loss, from the policy's sent touches whose
    attribution window has closed: the job decides with it, delivery re-checks the stop-loss."""
    rows = list(
        Touch.select(*_COLUMNS.values())
        .where((Touch.policy == row.id) & (Touch.status == "sent") & Touch.attributed)
        .tuples()
    )
    col = named(tuple(_COLUMNS), rows)
    return learnt_state(
        policy,
        policies.coupon_faces(tenant_id, policy),
        arm=_codes(col["arm"], [a.name for a in policy.arms]),
        tier=_codes(col["tier"], TIERS),
        returned=np.array(col["returned"], dtype=bool),
        spent_fen=np.array(col["spent_fen"], dtype=np.int64),
        value_fen=np.array(col["value_fen"], dtype=np.int64),
    )


def _codes(values, names) -> np.ndarray:
    """Index of each value in `names` (-1 for others), one lookup per distinct value: a
    policy's finished touches grow without end."""
    distinct, inverse = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
    table = np.array([names.index(v) if v in names else -1 for v in distinct], dtype=np.int64)
    return table[inverse] if len(values) else np.zeros(0, dtype=np.int64)
