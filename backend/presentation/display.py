"""How measures read on a terminal or a page: one set of formats for every report."""

from __future__ import annotations


def pct(x: float | None, width: int = 5) -> str:
    """A share as a percentage with one decimal; a dash when there is nothing to show."""
    return "–".rjust(width + 1) if x is None else f"{100 * x:{width}.1f}%"


def pp(x: float | None) -> str:
    """A difference of shares in percentage points."""
    return "–" if x is None else f"{100 * x:+.1f} pp"


def pp_interval(d: dict) -> str:
    """A difference with its interval: `+4.7 pp [-3.5, +13.0]` (from metrics.Diff.as_dict)."""
    if d["diff"] is None:
        return "–"
    if d["lo"] is None:
        return pp(d["diff"])
    return f"{pp(d['diff'])} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def yuan(fen: int | float | None) -> str:
    """Money stored in fen (1/100 yuan) as merchants read it: `¥12.30`; a dash for none."""
    return "–" if fen is None else f"¥{fen / 100:.2f}"


def ratio(x: float | None) -> str:
    """A ratio such as ROI or revenue per cost with two decimals; a dash when undefined."""
    return "–" if x is None else f"{x:.2f}"
