"""Subscribe-message allowances a decision may count on: what the users granted, less what
queued sends have already promised."""

from __future__ import annotations

import numpy as np
import peewee as pw

from backend.core.policy import CHANNELS, Policy, PolicyError
from backend.services import policies
from backend.store.models import Policy as PolicyRow
from backend.store.models import SubscriptionAllowance, Touch


def allowances(
    tenant_id: int, policy: Policy, pos: dict[int, int], n: int, policy_id: int, day: int
) -> dict[str, np.ndarray]:
    """Subscribe-message allowances left per template, less those already promised to
    queued sends that have not gone out yet (a quiet-hours deferral, a retry): WeChat takes
    one allowance per message, so counting them twice plans a send that must fail.

    Parameters
    ----------
    pos : database user id -> row of the population (users not in it are ignored).
    n : the population's size.
    policy_id, day : the deciding policy and day (its own touches of the day reserve nothing).

    Returns
    -------
    template id -> allowances left per row, for each template the policy's subscribe touches
    use (UserState.allowance).
    """
    templates = sorted(
        {
            policy.messages[t.message].template_id
            for a in policy.arms
            for t in a.touches
            if CHANNELS[t.channel] == "subscribe"
        }
    )
    out = {t: np.zeros(n, dtype=np.int64) for t in templates}
    if not templates:
        return out
    rows = (
        SubscriptionAllowance.select(
            SubscriptionAllowance.user,
            SubscriptionAllowance.template_id,
            SubscriptionAllowance.remaining,
        )
        .where(
            (SubscriptionAllowance.tenant == tenant_id)
            & SubscriptionAllowance.template_id.in_(templates)
        )
        .tuples()
    )
    for user, template, remaining in rows:
        i = pos.get(user)
        if i is not None:
            out[template][i] = remaining
    for user, template, count in _reserved(tenant_id, policy_id, day):
        i = pos.get(user)
        if i is not None and template in out:
            out[template][i] = max(out[template][i] - count, 0)
    return out


def _reserved(tenant_id: int, policy_id: int, day: int) -> list[tuple[int, str, int]]:
    """(user, template, count) of subscribe sends queued and not yet sent. This policy's own
    touches of `day` are left out: a rerun of the day must decide as the first run did."""
    rows = list(
        Touch.select(Touch.user, Touch.policy, Touch.message, pw.fn.COUNT(Touch.id))
        .where(
            (Touch.tenant == tenant_id)
            & (Touch.channel == "subscribe")
            & Touch.status.in_(("queued", "sending"))
            & ~((Touch.policy == policy_id) & (Touch.day == day))
        )
        .group_by(Touch.user, Touch.policy, Touch.message)
        .tuples()
    )
    specs = {}
    for r in PolicyRow.select().where(PolicyRow.id.in_({p for _, p, _, _ in rows})):
        try:
            specs[r.id] = policies.loaded(r)
        except PolicyError:
            continue  # its queued touches fail at delivery (policy_unreadable): nothing reserved
    out = []
    for user, pid, message, count in rows:
        spec = specs.get(pid)
        if spec is not None and message in spec.messages:
            out.append((user, spec.messages[message].template_id, int(count)))
    return out
