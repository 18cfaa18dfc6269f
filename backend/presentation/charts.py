"""Chart descriptions (Plotly figure dicts), built once for the dashboard and the simulator's
report. Plain data in, plain JSON-able dicts out: whoever shows them ships plotly.js itself
(from the `plotly` package, never a CDN), so every chart works on a campus LAN offline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

PALETTE = ("#2f6fde", "#e4572e", "#17a673", "#f3a712", "#8e44ad", "#555555", "#c0392b")
FONT = "PingFang SC, Microsoft YaHei, Noto Sans CJK SC, sans-serif"
# A value nobody could compute (no users in the group): drawn as this word at zero height,
# never as a bar or a dot at 0, which would read as a measured nothing.
UNKNOWN = "未知"


def _layout(
    title: str, y_title: str, x_title: str = "", percent: bool = False, x: Sequence = ()
) -> dict:
    # Dates as categories: one day is one tick, and a single day does not zoom to milliseconds.
    x_type = {"type": "category"} if x and isinstance(x[0], str) else {}
    return {
        "title": {"text": title, "font": {"size": 15}},
        "font": {"family": FONT, "size": 12},
        "height": 300,
        "margin": {"l": 56, "r": 16, "t": 44, "b": 44},
        "xaxis": {"title": {"text": x_title}, **x_type},
        "yaxis": {
            "title": {"text": y_title},
            "rangemode": "tozero",
            **({"tickformat": ".0%"} if percent else {}),
        },
        "legend": {"orientation": "h", "y": -0.2},
        "plot_bgcolor": "#fff",
    }


def line(
    title: str,
    x: Sequence,
    series: Mapping[str, Sequence[float]],
    y_title: str,
    x_title: str = "",
    percent: bool = False,
) -> dict:
    """One line per series over a shared x (days, dates)."""
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers" if len(x) <= 3 else "lines",
            "name": name,
            "x": list(x),
            "y": list(values),
            "line": {"color": PALETTE[k % len(PALETTE)]},
        }
        for k, (name, values) in enumerate(series.items())
    ]
    return {"data": data, "layout": _layout(title, y_title, x_title, percent, x)}


def stacked_area(
    title: str, x: Sequence, series: Mapping[str, Sequence[float]], y_title: str, share=False
) -> dict:
    """Parts of a whole over time (users by tier, sends by arm); `share` normalises to 100%."""
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "stackgroup": "one",
            **({"groupnorm": "percent"} if share and k == 0 else {}),
            "name": name,
            "x": list(x),
            "y": list(values),
            "line": {"color": PALETTE[k % len(PALETTE)], "width": 1},
        }
        for k, (name, values) in enumerate(series.items())
    ]
    layout = _layout(title, y_title, x=x)
    if share:
        layout["yaxis"]["ticksuffix"] = "%"
    return {"data": data, "layout": layout}


def bars(
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    y_title: str,
    lo: Sequence[float | None] | None = None,
    hi: Sequence[float | None] | None = None,
    percent: bool = False,
    colors: Sequence[str] | None = None,
) -> dict:
    """One bar per label; with lo/hi, the interval drawn as an error bar around each value."""
    vals = [None if v is None else float(v) for v in values]
    bar: dict = {
        "type": "bar",
        "x": list(labels),
        "y": vals,
        "marker": {"color": list(colors or [PALETTE[i % len(PALETTE)] for i in range(len(vals))])},
        "text": [_label(v, percent) for v in vals],
        "textposition": "outside",
        "cliponaxis": False,
        "showlegend": False,
    }
    if lo is not None and hi is not None:
        bar["error_y"] = _interval(vals, lo, hi)
    layout = _layout(title, y_title, percent=percent)
    _mark_unknown(layout, labels, vals)
    return {"data": [bar], "layout": layout}


def interval_dots(
    title: str,
    labels: Sequence[str],
    estimates: Sequence[float | None],
    lo: Sequence[float | None],
    hi: Sequence[float | None],
    y_title: str,
    truth: Sequence[float | None] | None = None,
    percent: bool = True,
) -> dict:
    """Effects with their 95% interval and the zero line: does the interval exclude zero?"""
    est = [None if v is None else float(v) for v in estimates]
    data = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "估计（95% 区间）",
            "x": list(labels),
            "y": est,
            "marker": {"size": 10, "color": PALETTE[0]},
            "error_y": _interval(est, lo, hi),
        }
    ]
    if truth is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "真实提升",
                "x": list(labels),
                "y": [None if v is None else float(v) for v in truth],
                "marker": {"size": 10, "symbol": "x", "color": PALETTE[1]},
            }
        )
    layout = _layout(title, y_title, percent=percent)
    layout["yaxis"].pop("rangemode")
    layout["shapes"] = [
        {
            "type": "line",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": 0,
            "y1": 0,
            "line": {"color": "#999", "dash": "dot"},
        }
    ]
    _mark_unknown(layout, labels, est)
    return {"data": data, "layout": layout}


def _mark_unknown(layout: dict, labels: Sequence[str], values: Sequence[float | None]) -> None:
    """Write 未知 where a value is None (plotly draws nothing there, which reads as missing
    data at best). The x axis is pinned to the labels, so an all-unknown chart keeps them."""
    unknown = [label for label, v in zip(labels, values, strict=True) if v is None]
    if not unknown:
        return
    layout["xaxis"].update(type="category", categoryarray=list(labels), categoryorder="array")
    layout["annotations"] = [
        {
            "x": label,
            "y": 0,
            "xref": "x",
            "yref": "y",
            "text": UNKNOWN,
            "showarrow": False,
            "yanchor": "bottom",
            "font": {"color": "#888"},
        }
        for label in unknown
    ]


def _interval(values, lo, hi) -> dict:
    """Plotly wants distances from the value, not the bounds themselves."""
    plus, minus = [], []
    for v, a, b in zip(values, lo, hi, strict=True):
        ok = v is not None and a is not None and b is not None
        plus.append(max(float(b) - v, 0.0) if ok else None)
        minus.append(max(v - float(a), 0.0) if ok else None)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}


def _label(v: float | None, percent: bool) -> str:
    if v is None:
        return UNKNOWN
    return f"{100 * v:.1f}%" if percent else f"{v:,.0f}"


def render_js() -> str:
    """The few lines that turn `data-figure` attributes into charts (served or inlined)."""
    return (Path(__file__).with_name("charts_render.js")).read_text(encoding="utf-8")


def plotly_js_path() -> Path:
    """plotly.js as the plotly package ships it: the only copy the product uses."""
    import plotly

    return Path(plotly.__file__).with_name("package_data") / "plotly.min.js"


def figure_div(figure: dict, name: str) -> str:
    """A placeholder the renderer fills; the figure travels as escaped JSON in an attribute."""
    import html
    import json

    payload = html.escape(json.dumps(figure, ensure_ascii=False, separators=(",", ":")))
    return f'<div class="chart" data-chart="{html.escape(name)}" data-figure="{payload}"></div>'
