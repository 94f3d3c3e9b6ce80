"""Charts of the reports, drawn with matplotlib (no display needed: figures render with Agg).

:func:`chart` draws a :class:`flows.reports.Report` as one figure; :func:`save` writes it as a PNG or
as a self-contained HTML page (the PNG inlined, then the report's tables). Every axes is checked
for a title, axis labels and a legend before a figure is saved (:func:`readability_problems`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models import RetainError

from .reports import Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["NothingToChart", "chart", "readability_problems", "render_png", "save"]

#: readable on a laptop screen and in a slide
STYLE: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
COLOURS = {
    "new": "#4C9F70",
    "expansion": "#8FD694",
    "reactivation": "#3A7CA5",
    "contraction": "#F4A259",
    "churn": "#BC4B51",
    "grr": "#3A7CA5",
    "nrr": "#4C9F70",
    "green": "#4C9F70",
    "yellow": "#E9C46A",
    "red": "#BC4B51",
    "lift_up": "#4C9F70",
    "lift_down": "#BC4B51",
    "lift_none": "#6C757D",
    "too_few": "#ADB5BD",
    "funnel": "#3A7CA5",
}


class NothingToChart(RetainError):
    """The report has no data a chart could show."""


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _style() -> Any:
    import matplotlib

    return matplotlib.rc_context(STYLE)  # type: ignore[arg-type]  # (its keys are a Literal union)


def _money_axis(ax: Axes) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _percent_axis(ax: Axes, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))


def _legend(ax: Axes) -> None:
    """Outside the plot, on its right: a legend never hides data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _month_ticks(ax: Axes, labels: Sequence[str]) -> None:
    step = max(1, len(labels) // 12)
    ax.set_xticks(
        range(0, len(labels), step), [labels[i] for i in range(0, len(labels), step)], rotation=45, ha="right"
    )


# --------------------------------------------------------------------------------------------
# the charts


def _retention(report: Report) -> Figure:
    months = report.data.get("months") or []
    if not months:
        raise NothingToChart("nothing to chart: there is no revenue in this period")
    currency = report.data.get("currency") or ""
    labels = [m["month"] for m in months]
    x = list(range(len(labels)))
    fig = _figure(11, 8.5)
    top, bottom = fig.subplots(2, 1)

    # MRR movements: gains stacked above zero, losses below, net as a line
    def units(key: str, sign: int = 1) -> list[float]:
        return [sign * m[key] / 100 for m in months]

    base_up = [0.0] * len(x)
    for key, label in (("new", "new"), ("expansion", "expansion"), ("reactivation", "reactivation")):
        values = units(key)
        top.bar(x, values, bottom=base_up, color=COLOURS[key], label=label, width=0.7)
        base_up = [b + v for b, v in zip(base_up, values, strict=True)]
    base_down = [0.0] * len(x)
    for key, label in (("contraction", "contraction"), ("churn", "churn")):
        values = units(key, -1)
        top.bar(x, values, bottom=base_down, color=COLOURS[key], label=label, width=0.7)
        base_down = [b + v for b, v in zip(base_down, values, strict=True)]
    net = [(m["ending"] - m["starting"]) / 100 for m in months]
    top.plot(x, net, color="black", marker="o", linewidth=1.5, label="net change")
    top.axhline(0, color="black", linewidth=0.8)
    top.set_title("MRR waterfall: what moved each month")
    top.set_ylabel(f"MRR change ({currency})" if currency else "MRR change")
    top.set_xlabel("Month")
    _money_axis(top)
    _month_ticks(top, labels)
    _legend(top)

    # GRR and NRR of the 12-month cohorts
    grr = [m["grr"] * 100 if m["grr"] is not None else float("nan") for m in months]
    nrr = [m["nrr"] * 100 if m["nrr"] is not None else float("nan") for m in months]
    bottom.plot(x, nrr, color=COLOURS["nrr"], marker="o", linewidth=2, label="NRR (net revenue retention)")
    bottom.plot(x, grr, color=COLOURS["grr"], marker="s", linewidth=2, label="GRR (gross revenue retention)")
    bottom.axhline(100, color="black", linewidth=0.8, linestyle="--", label="100%")
    bottom.set_title("GRR and NRR of the accounts paying 12 months before")
    bottom.set_ylabel("Retention (% of MRR 12 months before)")
    bottom.set_xlabel("Month")
    _percent_axis(bottom)
    _month_ticks(bottom, labels)
    _legend(bottom)
    if all(v != v for v in grr):  # all NaN: the history is shorter than 13 months
        bottom.text(
            0.5, 0.5, "needs 13 months of revenue history", ha="center", va="center", transform=bottom.transAxes
        )
        bottom.set_ylim(0, 150)
    fig.suptitle(report.title, fontsize=14)
    return fig


def _playbooks(report: Report) -> Figure:
    playbooks = report.data.get("playbooks") or []
    rows = [(p["playbook"], o) for p in playbooks for o in p["outcomes"] if o["lift"] is not None]
    if not playbooks:
        raise NothingToChart("nothing to chart: no enrollment in this period")
    funnels = [p for p in playbooks if len(p["funnel"]) > 1][:6]
    fig = _figure(11, 3.0 + 0.45 * max(len(rows), 2) + 2.6 * ((len(funnels) + 1) // 2))
    grid = fig.add_gridspec(
        1 + (len(funnels) + 1) // 2,
        2,
        height_ratios=[max(len(rows), 2) * 0.45 + 1.5] + [2.6] * ((len(funnels) + 1) // 2),
    )
    lift_ax = fig.add_subplot(grid[0, :])
    window = report.data.get("window_days")

    # lift with its 95% interval, one line per playbook and outcome
    seen: set[str] = set()
    for y, (_, o) in enumerate(reversed(rows)):
        low, high = o["interval"]
        point = o["lift"] * 100
        if "too few" in o["verdict"]:
            colour, label = COLOURS["too_few"], "too few to tell"
        elif low <= 0 <= high:
            colour, label = COLOURS["lift_none"], "no detectable effect"
        elif point > 0:
            colour, label = COLOURS["lift_up"], "higher than holdout"
        else:
            colour, label = COLOURS["lift_down"], "lower than holdout"
        lift_ax.errorbar(
            point,
            y,
            xerr=[[point - low * 100], [high * 100 - point]],
            fmt="o",
            color=colour,
            ecolor=colour,
            capsize=4,
            markersize=7,
            label=label if label not in seen else None,
        )
        seen.add(label)
    lift_ax.axvline(0, color="black", linewidth=1, linestyle="--", label="no difference")
    lift_ax.set_yticks(range(len(rows)), [f"{p} · {o['label']}" for p, o in reversed(rows)])
    lift_ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    lift_ax.set_title(f"Lift: enrolled minus holdout, outcomes within {window} days (95% CI)")
    lift_ax.set_xlabel("Lift (percentage points)")
    lift_ax.set_ylabel("Playbook · outcome")
    _legend(lift_ax)
    if not rows:
        lift_ax.text(0.5, 0.5, "no outcome to compare yet", ha="center", va="center", transform=lift_ax.transAxes)
        lift_ax.set_xlim(-10, 10)

    # funnels: share of the enrolled reaching each stage
    for i, p in enumerate(funnels):
        ax = fig.add_subplot(grid[1 + i // 2, i % 2])
        stages = list(reversed(p["funnel"]))
        shares = [(s["share"] or 0) * 100 for s in stages]
        bars = ax.barh(range(len(stages)), shares, color=COLOURS["funnel"], label="share of enrolled")
        for bar, stage in zip(bars, stages, strict=True):
            ax.text(
                bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{stage['reached']}", va="center", fontsize=9
            )
        ax.set_yticks(range(len(stages)), [s["stage"] for s in stages])
        ax.set_xlim(0, 118)  # room on the right for the counts
        ax.set_xticks([0, 25, 50, 75, 100])
        _percent_axis(ax, "x")
        ax.set_title(f"Funnel: {p['playbook']} ({p['enrolled']} enrolled)")
        ax.set_xlabel("Share of enrolled (%); bar labels: enrollments")
        ax.set_ylabel("Stage")
        _legend(ax)
    fig.suptitle(report.title, fontsize=14)
    return fig


def _surveys(report: Report) -> Figure:
    months = report.data.get("months") or []
    if not any(m[k]["responses"] for m in months for k in ("nps", "csat", "ces")):
        raise NothingToChart("nothing to chart: no survey answers in this period")
    labels = [m["month"] for m in months]
    x = list(range(len(labels)))
    fig = _figure(11, 9)
    axes = fig.subplots(3, 1, sharex=True)
    specs = (
        ("nps", "NPS", "NPS (% promoters − % detractors)", (-100, 100), "#3A7CA5"),
        ("csat", "CSAT", "CSAT (% satisfied, 4-5 of 5)", (0, 100), "#4C9F70"),
        ("ces", "CES", "CES (average, 1-7; 7 = easy)", (1, 7), "#F4A259"),
    )
    for ax, (kind, name, ylabel, limits, colour) in zip(axes, specs, strict=True):
        values = [m[kind]["score"] if m[kind]["score"] is not None else float("nan") for m in months]
        answers = [m[kind]["responses"] for m in months]
        ax.plot(x, values, marker="o", color=colour, linewidth=2, label=f"{name} by month")
        for xi, v, n in zip(x, values, answers, strict=True):
            if n:
                ax.annotate(f"n={n}", (xi, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        ax.set_ylim(*limits)
        ax.set_title(f"{name} by month")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("Month")
        _legend(ax)
    _month_ticks(axes[-1], labels)
    fig.suptitle(report.title, fontsize=14)
    return fig


def _health(report: Report) -> Figure:
    snapshots = report.data.get("over_time") or []
    if not any(sum(s[b] for b in ("green", "yellow", "red")) for s in snapshots):
        raise NothingToChart("nothing to chart: no health scores in this period")
    labels = [s["at"] for s in snapshots]
    x = list(range(len(labels)))
    fig = _figure(11, 5.5)
    ax = fig.subplots()
    base = [0] * len(x)
    for band in ("green", "yellow", "red"):
        values = [s[band] for s in snapshots]
        ax.bar(x, values, bottom=base, color=COLOURS[band], label=band, width=0.7)
        base = [b + v for b, v in zip(base, values, strict=True)]
    ax.set_title("Accounts by health band, at the end of each month")
    ax.set_ylabel("Accounts")
    ax.set_xlabel("Month")
    _month_ticks(ax, labels)
    _legend(ax)
    fig.suptitle(report.title, fontsize=14)
    return fig


_CHARTS = {"retention": _retention, "playbooks": _playbooks, "surveys": _surveys, "health": _health}


def chart(report: Report) -> Figure:
    """The report's figure; :class:`NothingToChart` when it has no data to draw."""
    try:
        draw = _CHARTS[report.kind]
    except KeyError:
        raise NothingToChart(f"there is no chart of a {report.kind} report") from None
    with _style():
        return draw(report)


# --------------------------------------------------------------------------------------------
# checking and saving


def readability_problems(fig: Figure) -> list[str]:
    """What a reader would miss: every axes needs a title, both axis labels and a legend."""
    problems = []
    if not fig.axes:
        problems.append("the figure has no axes")
    for i, ax in enumerate(fig.axes, start=1):
        name = ax.get_title() or f"axes {i}"
        if not ax.get_title():
            problems.append(f"{name}: no title")
        if not ax.get_xlabel():
            problems.append(f"{name}: no x-axis label")
        if not ax.get_ylabel():
            problems.append(f"{name}: no y-axis label")
        if ax.get_legend() is None:
            problems.append(f"{name}: no legend")
    return problems


def render_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, after checking it is readable."""
    problems = readability_problems(fig)
    if problems:
        raise RetainError("the chart is not readable: " + "; ".join(problems))
    with _style():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _html_page(report: Report, png: bytes) -> str:
    tables = []
    for table in report.tables:
        head = "".join(f"<th>{html.escape(c.name)}</th>" for c in table.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="{"num" if c.kind != "text" else "text"}">{html.escape(v)}</td>'
                for v, c in zip(row, table.columns, strict=True)
            )
            + "</tr>"
            for row in table.shown()
        )
        tables.append(
            f"<h2>{html.escape(table.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(report.title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; padding: 0 1rem; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 1rem 0 2rem; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; }}
th {{ background: #f4f4f4; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style>
</head>
<body>
<h1>{html.escape(report.title)}</h1>
<p>As of {html.escape(report.as_of)}.</p>
<img alt="{html.escape(report.title)}" src="data:image/png;base64,{image}">
{"".join(tables)}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body>
</html>
"""


def save(report: Report, path: Path, fig: Figure | None = None) -> Path:
    """Write the report's chart to ``path``: ``.png``, or ``.html`` (a self-contained page with the
    chart inlined and the report's tables)."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise RetainError(f"a chart is written as .png or .html, not {path.name!r}")
    png = render_png(fig if fig is not None else chart(report))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        path.write_bytes(png)
    else:
        path.write_text(_html_page(report, png), encoding="utf-8")
    return path
