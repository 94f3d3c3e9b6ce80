"""Charts of the reports, drawn with matplotlib (no display needed: figures render with Agg).

:func:`chart` draws a :class:`flows.reports.reports.Report` as one figure; :func:`save` writes it as a PNG or
as a self-contained HTML page (the PNG inlined, then the report's tables). Every axes is checked
for a title, axis labels and a legend before a figure is saved (:func:`readability_problems`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.reports.reports import Report
from models import RetainError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

__all__ = ["NothingToChart", "chart", "readability_problems", "render_png", "save"]

#: readable on a laptop screen and in a slide
STYLE: dict[RcKeyType, Any] = {
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

    return matplotlib.rc_context(STYLE)


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


def _from_first(items: Sequence[Any], has_data: Any) -> list[Any]:
    """``items`` from the first one with data (a chart of months before any data is empty space)."""
    for i, item in enumerate(items):
        if has_data(item):
            return list(items[i:])
    return list(items)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#6C757D", fontsize=11)


# --------------------------------------------------------------------------------------------
# the charts


def _retention(report: Report) -> Figure:
    months = report.data.get("months") or []
    if not months:
        raise NothingToChart("nothing to chart: there is no revenue in this period")
    currency = report.data.get("currency") or ""
    labels = [m["month"] for m in months]
    fig = _figure(11, 8.5)
    top, bottom = fig.subplots(2, 1)
    _waterfall_panel(top, months, labels, currency)
    _grr_nrr_panel(bottom, months, labels, xlim=top.get_xlim())
    _legend(bottom)
    others = [c for c in report.data.get("currencies") or [] if c != currency]
    title = report.title
    if others:
        title += f" (not converted; the revenue in {', '.join(others)} is left out: --currency for it)"
    fig.suptitle(title, fontsize=14)
    return fig


def _waterfall_panel(top: Axes, months: list[dict[str, Any]], labels: list[str], currency: str) -> None:
    """MRR movements: gains stacked above zero, losses below, net as a line."""
    x = list(range(len(labels)))

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
    for xi, value in zip(x, net, strict=True):
        top.annotate(f"{value:+,.0f}", (xi, value), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    top.axhline(0, color="black", linewidth=0.8)
    low, high = top.get_ylim()
    top.set_ylim(low, high + (high - low) * 0.1)  # room for the labels above the highest bar
    top.set_title("MRR waterfall: what moved each month")
    top.set_ylabel(f"MRR change ({currency})" if currency else "MRR change")
    top.set_xlabel("Month")
    _money_axis(top)
    _month_ticks(top, labels)
    _legend(top)


def _grr_nrr_panel(bottom: Axes, months: list[dict[str, Any]], labels: list[str], *, xlim: tuple[float, float]) -> None:
    """GRR and NRR of the 12-month cohorts."""
    x = list(range(len(labels)))
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
    bottom.set_xlim(xlim)  # the same months as the waterfall, under each other
    known = [v for v in grr + nrr if not math.isnan(v)]
    if not known:  # the history is shorter than 13 months
        _empty(bottom, "needs 13 months of revenue history")
        bottom.set_ylim(0, 150)
    else:
        # at least 80% to 110%, so that a fraction of a point does not look like a cliff
        bottom.set_ylim(min(80.0, min(known) - 2), max(110.0, max(known) + 4))
        first = next(i for i, (g, n) in enumerate(zip(grr, nrr, strict=True)) if not (math.isnan(g) and math.isnan(n)))
        if first > 0:
            bottom.text(
                (first - 1) / 2, 95, f"n/a before {labels[first]}:\nno revenue 12 months before",
                ha="center", va="center", color="#6C757D", fontsize=9,
            )  # fmt: skip
        for series, offset in ((nrr, 8), (grr, -14)):
            last = max((i for i, v in enumerate(series) if not math.isnan(v)), default=None)
            if last is not None:
                bottom.annotate(
                    f"{series[last]:.1f}%", (x[last], series[last]), textcoords="offset points",
                    xytext=(0, offset), ha="center", fontsize=9,
                )  # fmt: skip


def _playbooks(report: Report) -> Figure:
    playbooks = report.data.get("playbooks") or []
    rows = [(p["playbook"], o) for p in playbooks for o in p["outcomes"] if o["lift"] is not None]
    if not playbooks:
        raise NothingToChart("nothing to chart: no enrollment in this period")
    # playbooks with no holdout (or no enrolled) cannot be compared: said under the lift chart
    uncompared = [p for p in playbooks if not any(o["lift"] is not None for o in p["outcomes"])]
    funnels = [p for p in playbooks if len(p["funnel"]) > 1][:6]
    # funnels two by two; a row as tall as its longer funnel needs (a stage label is about 0.2 inch)
    pairs = [funnels[i : i + 2] for i in range(0, len(funnels), 2)]
    funnel_heights = [1.4 + 0.2 * max(len(p["funnel"]) for p in pair) for pair in pairs]
    lift_height = max(len(rows), 2) * 0.45 + 1.8 + (0.3 if uncompared else 0)
    fig = _figure(12, lift_height + sum(funnel_heights) + 0.6)
    grid = fig.add_gridspec(1 + len(pairs), 2, height_ratios=[lift_height, *funnel_heights])
    _lift_panel(fig.add_subplot(grid[0, :]), rows, uncompared, report.data.get("window_days"))
    for i, p in enumerate(funnels):
        _funnel_panel(fig.add_subplot(grid[1 + i // 2, i % 2]), p)
    fig.suptitle(report.title, fontsize=14)
    return fig


def _lift_panel(
    lift_ax: Axes, rows: list[tuple[str, dict[str, Any]]], uncompared: list[dict[str, Any]], window: Any
) -> None:
    """Lift with its 95% interval, one line per playbook and outcome, the numbers written by each."""
    seen: set[str] = set()
    for y, (_, o) in enumerate(reversed(rows)):
        low, high = o["interval"]
        point = o["lift"] * 100
        if "too few" in o["verdict"]:
            colour, label = COLOURS["too_few"], "too few to tell (n below the minimum)"
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
        lift_ax.annotate(
            f"{point:+.1f} ({low * 100:+.1f} to {high * 100:+.1f}); "
            f"{o['enrolled_rate'] * 100:.0f}% of {o['enrolled']} vs {o['holdout_rate'] * 100:.0f}% of {o['holdout']}",
            (point, y),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
        seen.add(label)
    lift_ax.axvline(0, color="black", linewidth=1, linestyle="--", label="no difference")
    lift_ax.set_yticks(range(len(rows)), [f"{p} · {o['label']}" for p, o in reversed(rows)])
    lift_ax.set_ylim(-0.7, max(len(rows), 1) - 0.1)
    lift_ax.set_title(f"Lift: enrolled minus holdout, outcomes within {window} days (95% CI)")
    xlabel = "Lift (percentage points); labels: lift (95% CI); enrolled rate of n vs holdout rate of n"
    if uncompared:
        names = ", ".join(f"{p['playbook']} ({p['enrolled']} enrolled, {p['holdout']} holdout)" for p in uncompared)
        xlabel += f"\nnot compared, no holdout or no enrolled: {names}"
    lift_ax.set_xlabel(xlabel)
    lift_ax.set_ylabel("Playbook · outcome")
    _legend(lift_ax)
    if not rows:
        _empty(lift_ax, "no outcome to compare yet")
        lift_ax.set_xlim(-10, 10)


def _funnel_panel(ax: Axes, p: dict[str, Any]) -> None:
    """A playbook's funnel: the share of the enrolled reaching each stage."""
    stages = list(reversed(p["funnel"]))
    shares = [(s["share"] or 0) * 100 for s in stages]
    bars = ax.barh(range(len(stages)), shares, color=COLOURS["funnel"], label="share of enrolled", height=0.7)
    for bar, stage in zip(bars, stages, strict=True):
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{stage['reached']}", va="center", fontsize=8)
    ax.set_yticks(range(len(stages)), [s["stage"] for s in stages], fontsize=8)
    ax.set_ylim(-0.6, len(stages) - 0.4)
    ax.set_xlim(0, 118)  # room on the right for the counts
    ax.set_xticks([0, 50, 100])
    _percent_axis(ax, "x")
    ax.set_title(f"Funnel: {p['playbook']} ({p['enrolled']} enrolled)")
    ax.set_xlabel("Share of enrolled (%); bar labels: enrollments")
    ax.set_ylabel("Stage")
    _legend(ax)


def _surveys(report: Report) -> Figure:
    months = report.data.get("months") or []
    if not any(m[k]["responses"] for m in months for k in ("nps", "csat", "ces")):
        raise NothingToChart("nothing to chart: no survey answers in this period")
    asked = len(months)
    months = _from_first(months, lambda m: any(m[k]["responses"] for k in ("nps", "csat", "ces")))
    trimmed = f" (no answers before {months[0]['month']})" if len(months) < asked else ""
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
                ax.annotate(
                    f"{v:.3g} (n={n})", (xi, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
                )
        if not any(answers):
            _empty(ax, f"no {name} answers in this period")
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_ylim(*limits)
        ax.set_title(f"{name} by month")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("Month")
        _legend(ax)
    _month_ticks(axes[-1], labels)
    fig.suptitle(report.title + trimmed, fontsize=14)
    return fig


def _health(report: Report) -> Figure:
    snapshots = report.data.get("over_time") or []
    if not any(sum(s[b] for b in ("green", "yellow", "red")) for s in snapshots):
        raise NothingToChart("nothing to chart: no health scores in this period")
    asked = len(snapshots)
    snapshots = _from_first(snapshots, lambda s: sum(s[b] for b in ("green", "yellow", "red")))
    trimmed = f" (no scores before {snapshots[0]['at']})" if len(snapshots) < asked else ""
    labels = [s["at"] for s in snapshots]
    x = list(range(len(labels)))
    fig = _figure(11, 5.5)
    ax = fig.subplots()
    base = [0] * len(x)
    for band in ("green", "yellow", "red"):
        values = [s[band] for s in snapshots]
        bars = ax.bar(x, values, bottom=base, color=COLOURS[band], label=band, width=0.7)
        # the count of each band, inside its bar when there is room, else just above the stack
        tall = max(base[i] + values[i] for i in range(len(x))) or 1
        for bar, value in zip(bars, values, strict=True):
            if value and value / tall >= 0.06:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + value / 2, str(value), ha="center",
                        va="center", fontsize=9, color="white" if band != "yellow" else "black")  # fmt: skip
            elif value:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + value, f"{band} {value}", ha="center",
                        va="bottom", fontsize=8)  # fmt: skip
        base = [b + v for b, v in zip(base, values, strict=True)]
    ax.set_ylim(0, max(base) * 1.1 or 1)
    ax.set_title("Accounts by health band, at the end of each month")
    ax.set_ylabel("Accounts")
    ax.set_xlabel("Month")
    _month_ticks(ax, labels)
    _legend(ax)
    fig.suptitle(report.title + trimmed, fontsize=14)
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
