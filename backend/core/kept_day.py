"""A day as the nightly fold (core.rolling) keeps it, to take it off its windows later.

Per column of the day's totals (core.day_totals), the rows it touches and their values;
mostly-zero columns keep their nonzero rows only, and days older than COMPACT_AFTER are
stored in the narrowest integers that hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from backend.core.day_totals import DayTotals

COLUMNS = tuple(f.name for f in fields(DayTotals))[2:]
_NARROW = [np.dtype(t) for t in (np.int8, np.int16, np.int32)]
COMPACT_AFTER = 30  # days: older kept days are read only when leaving the 90-day and look-back
# windows, so they are stored in the narrowest integers that hold them, widened for those reads


def _narrow(values: np.ndarray) -> np.ndarray:
    if values.dtype.itemsize <= 1 or not values.size:
        return values
    lo, hi = int(values.min()), int(values.max())
    for dtype in _NARROW:
        if dtype.itemsize < values.dtype.itemsize:
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return values.astype(dtype)
    return values


@dataclass
class KeptDay:
    """A day as the fold keeps it: per column, the rows it touches and their values (None:
    one each). Mostly-zero columns keep their nonzero rows only; columns no window reads any
    more are dropped."""

    day: int
    columns: dict[str, tuple[np.ndarray, np.ndarray | None]]

    @classmethod
    def of(cls, t: DayTotals, user: np.ndarray) -> KeptDay:
        """The day's totals as kept, with the "visited" and "ordered" flags they imply."""
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name in COLUMNS:
            values = getattr(t, name)
            if values is None:
                continue
            values = np.asarray(values, dtype=np.int64)
            k = int(np.count_nonzero(values))
            if k == 0:
                continue
            if 2 * k <= values.size:
                nonzero = values != 0
                columns[name] = (user[nonzero], values[nonzero])
            else:
                columns[name] = (user, values)
        for flag, source in (("visited", "events"), ("ordered", "orders")):
            entry = columns.get(source)
            if entry is not None:
                rows, values = entry
                positive = values > 0
                columns[flag] = (rows if positive.all() else rows[positive], None)
        return cls(t.day, columns)

    def drop(self, names: set[str]) -> None:
        """Forget the columns no window reads any more."""
        for name in names:
            self.columns.pop(name, None)

    def renumber(self, keep: np.ndarray, new_index: np.ndarray) -> None:
        """Only the rows of kept users, renumbered (see DailyFold.resize)."""
        out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name, (rows, values) in self.columns.items():
            mask = keep[rows]
            out[name] = (new_index[rows[mask]], None if values is None else values[mask])
        self.columns = out

    def compact(self) -> None:
        """Every array in the narrowest integers that hold it (shared arrays stay shared)."""
        done: dict[int, np.ndarray] = {}

        def narrow(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            if id(a) not in done:
                done[id(a)] = _narrow(a)
            return done[id(a)]

        self.columns = {k: (narrow(r), narrow(v)) for k, (r, v) in self.columns.items()}

    def header(self, arrays: dict[str, np.ndarray]) -> dict:
        """The day as JSON: per column the names of its row and value arrays, which are put
        in `arrays` as "kept.<k>" (an array shared by columns once; see DailyFold.to_arrays)."""
        named = {id(a): name for name, a in arrays.items() if name.startswith("kept.")}

        def name_of(a: np.ndarray | None) -> str | None:
            if a is None:
                return None
            if id(a) not in named:
                named[id(a)] = f"kept.{len(named)}"
                arrays[named[id(a)]] = a
            return named[id(a)]

        columns = {c: [name_of(r), name_of(v)] for c, (r, v) in self.columns.items()}
        return {"day": self.day, "columns": columns}

    @classmethod
    def from_header(cls, header: dict, arrays: dict[str, np.ndarray], n_users: int) -> KeptDay:
        """The day `header` gave, its arrays taken from `arrays` (shared ones stay shared);
        a ValueError if they are not rows of users 0..n_users-1 and a value per row."""
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for column, (rows, values) in header["columns"].items():
            r = np.asarray(arrays[rows])
            v = None if values is None else np.asarray(arrays[values])
            if r.ndim != 1 or r.dtype.kind != "i" or (v is not None and v.shape != r.shape):
                raise ValueError(f"kept day {header['day']} column {column} is malformed")
            if r.size and (int(r.min()) < 0 or int(r.max()) >= n_users):
                raise ValueError(f"kept day {header['day']} column {column} names unknown users")
            columns[column] = (r, v)
        return cls(int(header["day"]), columns)
