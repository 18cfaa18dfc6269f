"""Rows of a SELECT as named columns: the campaign queries read many users' rows at once, as
tuples for speed, and each names its columns once, in the mapping that builds its SELECT."""

from __future__ import annotations

import numpy as np


def named(names: tuple[str, ...], rows: list[tuple]) -> dict[str, tuple]:
    """The columns of `rows` by name; `rows` come from a SELECT of exactly `names`, in order.

    Parameters
    ----------
    names : the selected columns' names, in the order the SELECT lists them.
    rows : the query's rows.

    Returns
    -------
    name -> the column's values (an empty tuple for each when there are no rows).
    """
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return dict(zip(names, cols, strict=True))


def positions(table: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the sorted `table` (0 when absent), and whether it is there."""
    if len(table) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return at, table[at] == values
