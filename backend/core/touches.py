"""Decided touches as named columns: the one shape the live report and calibration read.

A touch is one decision for one user (a message sent, or a holdout "would have sent"). The live
report (services/reports.py) measures treated against holdout from these columns; calibration
(simulator/calibrate.py) fits the simulator's response rates from the same columns of the same
touches, and from the touches of a simulated campus. One type, so a column means one thing
whichever side reads it and is found by its name, never by its position in a query.

Text columns (policy, arm, tier, channel, status, message, kind) are integer codes into
`names[column]`: a report groups by them many times, and comparing small integers is what makes
that cheap. Every touch has a user, a day, a step, whether it was held out and whether the user
came back; the other columns are None where the source does not record them (the simulated
campus has no money columns; a kind is known only once the deciding policy is parsed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

import numpy as np

from backend.core import metrics
from backend.core.policy.history import touch_order

TEXT_COLUMNS = ("policy", "arm", "tier", "channel", "status", "message", "kind")


def code_text(values: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes for a column of strings, and the strings in code order (first seen first).

    Parameters
    ----------
    values : strings, one per touch.

    Returns
    -------
    int32 codes, one per touch, and the list that turns a code back into its string.
    """
    seen: dict[str, int] = {}
    codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int32)
    return codes, list(seen)


@dataclass(frozen=True, kw_only=True)
class TouchColumns:
    """Decided touches, one row each, sent and held out alike (intention to treat)."""

    user: np.ndarray  # int64: a database user id, or an index into a log's or campus's users
    day: np.ndarray  # int64: the day it was decided for (China day number or simulated day)
    step: np.ndarray  # int64: its step in its arm's journey (core.policy.history.touch_order)
    holdout: np.ndarray  # bool: a holdout "would have sent", not a send
    returned: np.ndarray  # bool: the user came back inside the attribution window
    names: dict[str, list[str]] = field(default_factory=dict)  # text column -> code's label
    # Text columns: int codes into names[column].
    policy: np.ndarray | None = None  # the deciding policy (by name)
    arm: np.ndarray | None = None
    tier: np.ndarray | None = None  # the user's tier when decided
    channel: np.ndarray | None = None
    status: np.ndarray | None = None  # sent, failed, expired, held_out
    message: np.ndarray | None = None  # the message's name in its policy
    kind: np.ndarray | None = None  # the message's kind (core.policy.spec.MESSAGE_KINDS)
    # Outcomes and money, as attribution recorded them.
    ordered: np.ndarray | None = None  # bool: paid an order inside the window
    opened: np.ndarray | None = None  # bool: the message was opened (the card shown)
    attempted: np.ndarray | None = None  # bool: delivery was tried at least once
    revenue: np.ndarray | None = None  # int64 fen ordered inside the window
    coupon_cost: np.ndarray | None = None  # int64 fen: the coupon's face, if redeemed in time
    message_cost: np.ndarray | None = None  # int64 fen
    value: np.ndarray | None = None  # int64 fen: the user's estimated value when decided
    retained_d7: np.ndarray | None = None  # int8: 1 yes, 0 no, -1 not yet known
    retained_d30: np.ndarray | None = None  # int8, as retained_d7
    lapsed: np.ndarray | None = None  # bool: the user was lapsed at decision (core.recall)

    @classmethod
    def with_text(cls, **columns: np.ndarray | Iterable[str] | None) -> TouchColumns:
        """Touches from columns whose text columns hold strings: each is coded here."""
        names: dict[str, list[str]] = {}
        for key in TEXT_COLUMNS:
            if columns.get(key) is not None:
                columns[key], names[key] = code_text(columns[key])
        return cls(**columns, names=names)

    def __len__(self) -> int:
        return int(self.user.size)

    def take(self, rows: np.ndarray) -> TouchColumns:
        """The touches at `rows` (a boolean mask or indices); names are shared."""
        return replace(
            self,
            **{
                f.name: getattr(self, f.name)[rows]
                for f in fields(self)
                if f.name != "names" and getattr(self, f.name) is not None
            },
        )

    def code(self, column: str, name: str) -> int:
        """The code of `name` in a text column; -1 if no touch has it."""
        values = self.names[column]
        return values.index(name) if name in values else -1

    def labels(self, column: str) -> np.ndarray:
        """A text column as its strings (object array), one per touch."""
        return np.array(self.names[column], dtype=object)[getattr(self, column)]

    def order(self) -> np.ndarray:
        """The key that orders the touches in time (core.policy.history.touch_order)."""
        return touch_order(self.day, self.step)

    def first_decisions(self) -> TouchColumns:
        """Each user's first decided touch per policy (earliest day, then step), in row order:
        the live report's rule (`metrics.first_per_user`), keyed by policy and user together.
        Needs the policy column."""
        if self.user.size == 0:
            return self
        key = self.policy.astype(np.int64) * (int(self.user.max()) + 1) + self.user
        return self.take(np.sort(metrics.first_per_user(key, self.order())))
