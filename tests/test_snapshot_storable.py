"""A student gone for years has a P(alive) like 1e-56: PostgreSQL's `real` refuses it as out
of range (a whole tenant's night then failed on every retry), SQLite keeps it. The snapshot
stores such values as 0 on both."""

from __future__ import annotations

import numpy as np
from helpers.app import make_tenant

from backend.services import scoring
from backend.store.models import ScoreSnapshot, User


def test_values_too_small_for_a_real_column_are_stored_as_zero(app, clock):
    tenant = make_tenant(app, "wxtiny0000000001")
    tiny = np.array([2.2e-56, 1e-39, 0.5, np.nan, 1.2e-38])
    assert scoring.storable(tiny)[:3].tolist() == [0.0, 0.0, 0.5]
    assert np.isnan(scoring.storable(tiny)[3]) and scoring.storable(tiny)[4] == 1.2e-38
    with app.app_context():
        user = User.create(tenant=tenant.id, openid="o_gone", created_ms=clock.now_ms())
        row = {f: 0 for f in ScoreSnapshot._meta.sorted_field_names if f != "id"}
        row |= {"tenant": tenant.id, "day": 20000, "user": user.id, "tier": "churned"}
        row |= {"reason": "silent", "segment": "lost", "warning": False}
        row |= {"worth_recalling": False, "p_alive": float(scoring.storable(tiny)[0])}
        fields, rows = scoring._insert_rows({k: [v] for k, v in row.items()})
        scoring._insert_snapshot(fields, rows)
        assert ScoreSnapshot.get(ScoreSnapshot.user == user.id).p_alive == 0.0
