"""Calibration's loaders: a tenant's event log and decided touches from the database, as the
columns the fits read (simulator/calibrate_organic.py, simulator/calibrate_response.py).

Both read through the services production uses (scoring's loader, the report's touch loader),
so calibration fits the log and the touches the tenant's own scores and report see.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from backend.core.calendar import day_date
from backend.core.policy import Policy
from backend.core.touches import TouchColumns, code_text
from backend.errors import ApiError
from backend.services import policies, reports
from backend.services.scoring import load_columns
from backend.store.models import Policy as PolicyRow
from simulator.calibrate_organic import Log, NotEnoughHistory


def load_log(tenant_id: int, as_of: int) -> tuple[Log, np.ndarray]:
    """The tenant's log up to the end of `as_of`, as production's scoring loads it (the
    scoring lookback, LOOKBACK_DAYS), and the database ids of its users (by index)."""
    cols = load_columns(tenant_id, as_of)
    if cols.events.day.size == 0:
        raise NotEnoughHistory(f"no events up to {day_date(as_of)}: nothing to calibrate from")
    first = int(cols.events.day.min())
    return Log.of(cols.events, cols.orders, len(cols.user_ids), first, as_of), cols.user_ids


def load_touches(
    tenant_id: int, as_of: int, user_ids: np.ndarray
) -> tuple[TouchColumns, dict[str, Policy]]:
    """Attributed touches decided up to `as_of`, as the report loads them (sent, failed,
    expired and held out: the intention-to-treat set it measures), each with its message's
    kind; and the policies that decided them, parsed, by name. Touches of a policy whose
    stored source the parser now refuses, or of a user not in the log, are left out.

    Parameters
    ----------
    user_ids : the log's users (database ids, sorted), whose positions the touches' `user`
        column becomes.

    Returns
    -------
    The touches (`policy` labelled by name, `user` an index into `user_ids`), and the
    policies by name.
    """
    t = reports.load(tenant_id, day_to=as_of, with_messages=True)
    parsed: dict[str, Policy] = {}
    for name, source in (
        PolicyRow.select(PolicyRow.name, PolicyRow.source)
        .where((PolicyRow.tenant == tenant_id) & PolicyRow.name.in_(t.names["policy"] or [""]))
        .tuples()
    ):
        try:
            parsed[name] = policies.parse(source)
        except ApiError:
            continue
    kinds = {name: {m: spec.kind for m, spec in p.messages.items()} for name, p in parsed.items()}
    kind = np.array(
        [
            kinds.get(policy, {}).get(message, "")
            for policy, message in zip(t.labels("policy"), t.labels("message"), strict=True)
        ],
        dtype=object,
    )
    at = np.searchsorted(user_ids, t.user)
    known = (at < user_ids.size) & (user_ids[np.minimum(at, user_ids.size - 1)] == t.user)
    keep = np.flatnonzero(known & (kind != ""))
    codes, names = code_text(kind[keep])
    touches = replace(t.take(keep), user=at[keep], kind=codes, names={**t.names, "kind": names})
    return touches, parsed
