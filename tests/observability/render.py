"""Draws a Grafana dashboard as a PNG from a Prometheus' data, since Grafana cannot run here:
rows as headings, stats as their last value, time series and state timelines over the window."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from tests.observability.dashboards import Dashboard
from tests.observability.prometheus_api import Series

# Grafana's dark theme and classic palette.
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]
NAMED_COLORS = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "blue": "#5794f2"}
# In Grafana a grid unit is 1/24 of the width across and 30 px down; drawn 1600 px wide.
WIDTH_PX, UNIT_PX, DPI, HEADER_PX = 1600, 30, 100, 60
LEGEND_COLUMNS, LEGEND_ROWS, LEGEND_ROW_PX = 3, 3, 14

Fetch = Callable[[str], list[Series]]
Drawn = list[tuple[str, Series]]  # (legend, series) of one panel


def render_dashboard(
    dashboard: Dashboard, fetch: Fetch, window: tuple[float, float], out: Path, subtitle: str
) -> None:
    """Draw every panel of `dashboard` over `window` (unix times) into the PNG `out`;
    `fetch(expr)` returns a panel query's series over the window."""
    canvas = _Canvas(dashboard, window)
    canvas.heading(dashboard.title, subtitle)
    for panel in dashboard.model["panels"]:
        if panel["type"] == "row":
            canvas.row(panel)
            continue
        drawn = [
            (legend_text(target["legendFormat"], series.labels), series)
            for target in panel["targets"]
            for series in fetch(target["expr"])
        ]
        draw = {
            "stat": canvas.stat,
            "timeseries": canvas.timeseries,
            "state-timeline": canvas.state_timeline,
        }
        if panel["type"] not in draw:
            raise ValueError(f"cannot draw a {panel['type']} panel ({panel['title']})")
        draw[panel["type"]](panel, drawn)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.figure.savefig(out, facecolor=BACKGROUND)


def legend_text(template: str, labels: dict[str, str]) -> str:
    """A Grafana legendFormat with {{label}} filled in from the series' labels."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template).strip()


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """A value as Grafana shows it in `unit` (the units the dashboards use)."""
    if math.isnan(value):
        return "No data"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "percentunit":
        return f"{value * 100:.{2 if decimals is None else decimals}f}%"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB"):
            if abs(value) < 1024:
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1024
        return f"{value:.1f} GiB"
    text = f"{value:.{decimals}f}" if decimals is not None else f"{value:.3g}"
    return text + {"ops": " ops/s", "reqps": " req/s"}.get(unit, "")


class _Canvas:
    """The figure, with panels placed where their gridPos puts them in Grafana."""

    def __init__(self, dashboard: Dashboard, window: tuple[float, float]) -> None:
        units_down = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard.model["panels"])
        self.height_px = units_down * UNIT_PX + HEADER_PX
        self.window = tuple(datetime.fromtimestamp(t, UTC) for t in window)
        # A bare Figure (no pyplot): the Agg canvas draws it, no display or global state.
        size = (WIDTH_PX / DPI, self.height_px / DPI)
        self.figure = Figure(figsize=size, dpi=DPI, facecolor=BACKGROUND)

    def heading(self, title: str, subtitle: str) -> None:
        y = 1 - 22 / self.height_px
        self.figure.text(0.01, y, title, color=TEXT, fontsize=16, va="center")
        self.figure.text(0.99, y, subtitle, color=TEXT, fontsize=9, va="center", ha="right")

    def row(self, panel: dict[str, Any]) -> None:
        left, bottom, _, height = self._box(panel)
        self.figure.text(
            left, bottom + height / 2, panel["title"], color=TEXT, fontsize=12, weight="bold"
        )

    def stat(self, panel: dict[str, Any], drawn: Drawn) -> None:
        self._frame(panel)
        left, bottom, width, height = self._box(panel)
        defaults = panel["fieldConfig"]["defaults"]
        shown = [(legend, _last(series)) for legend, series in drawn] or [("", math.nan)]
        for index, (legend, value) in enumerate(shown):
            x = left + width * (index + 0.5) / len(shown)
            text = format_value(value, defaults.get("unit", "short"), defaults.get("decimals"))
            color = _threshold_color(defaults, value)
            self.figure.text(
                x,
                bottom + height * 0.4,
                text,
                color=color,
                fontsize=22,
                weight="bold",
                ha="center",
                va="center",
            )
            if panel["options"].get("textMode") == "value_and_name":
                self.figure.text(
                    x, bottom + height * 0.12, legend, color=TEXT, fontsize=8, ha="center"
                )

    def timeseries(self, panel: dict[str, Any], drawn: Drawn) -> None:
        self._frame(panel)
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        # The largest series first, so the legend's limited room names the visible lines.
        drawn = sorted(drawn, key=lambda item: -max(_finite(item[1]), default=0.0))
        axes = self._plot_area(panel, legend_entries=len(drawn))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_value(value, unit)))
        bars = panel["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
        for index, (legend, series) in enumerate(drawn):
            times = [datetime.fromtimestamp(t, UTC) for t, _ in series.points]
            values = [value for _, value in series.points]
            color = PALETTE[index % len(PALETTE)]
            if bars:
                axes.bar(times, values, width=1 / 86400, color=color, label=legend, alpha=0.8)
            else:
                axes.plot(times, values, color=color, label=legend, linewidth=1.2)
        axes.set_ylim(bottom=0)
        self._legend(panel, axes)

    def state_timeline(self, panel: dict[str, Any], drawn: Drawn) -> None:
        self._frame(panel)
        mappings = {
            float(value): option
            for mapping in panel["fieldConfig"]["defaults"].get("mappings", [])
            for value, option in mapping["options"].items()
        }
        axes = self._plot_area(panel, legend_entries=0)
        axes.set_yticks(range(len(drawn)), [legend for legend, _ in drawn], fontsize=7)
        axes.set_ylim(-0.5, len(drawn) - 0.5)
        axes.invert_yaxis()
        for row, (_, series) in enumerate(drawn):
            for start, end, value in _runs(series):
                option = mappings.get(value, {})
                color = NAMED_COLORS.get(option.get("color", ""), PALETTE[row % len(PALETTE)])
                span = [datetime.fromtimestamp(t, UTC) for t in (start, end)]
                axes.barh(row, span[1] - span[0], left=span[0], height=0.8, color=color)
                text = option.get("text", format_value(value, "short"))
                axes.text(span[0], row, f" {text}", color=BACKGROUND, fontsize=7, va="center")

    def _box(self, panel: dict[str, Any]) -> tuple[float, float, float, float]:
        """Figure coordinates of a panel's gridPos, with a small gap around it."""
        grid, gap = panel["gridPos"], 4
        left = (grid["x"] * WIDTH_PX / 24 + gap) / WIDTH_PX
        top = (HEADER_PX + grid["y"] * UNIT_PX + gap) / self.height_px
        width = (grid["w"] * WIDTH_PX / 24 - 2 * gap) / WIDTH_PX
        height = (grid["h"] * UNIT_PX - 2 * gap) / self.height_px
        return left, 1 - top - height, width, height

    def _frame(self, panel: dict[str, Any]) -> None:
        frame = self.figure.add_axes(self._box(panel))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        title = panel["title"]
        frame.text(0.01, 0.97, title, transform=frame.transAxes, color=TEXT, fontsize=10, va="top")

    def _plot_area(self, panel: dict[str, Any], legend_entries: int) -> Axes:
        """Axes inside the panel below its title, leaving room for the legend's rows."""
        left, bottom, width, height = self._box(panel)
        rows = min(LEGEND_ROWS, math.ceil(legend_entries / LEGEND_COLUMNS))
        below = (24 + rows * LEGEND_ROW_PX) / self.height_px  # x labels, then the legend
        above = 26 / self.height_px
        # Room for the y labels: units on the left of time series, legends of state timelines.
        inset = (150 if panel["type"] == "state-timeline" else 60) / WIDTH_PX
        axes = self.figure.add_axes(
            (left + inset, bottom + below, width - inset - 12 / WIDTH_PX, height - below - above)
        )
        axes.set_facecolor(PANEL)
        axes.tick_params(colors=TEXT, labelsize=7)
        axes.grid(color=GRID, linewidth=0.5)
        for spine in axes.spines.values():
            spine.set_visible(False)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        axes.set_xlim(*self.window)
        return axes

    def _legend(self, panel: dict[str, Any], axes: Axes) -> None:
        """The first entries, in columns along the panel's bottom edge."""
        handles, labels = axes.get_legend_handles_labels()
        shown = LEGEND_COLUMNS * LEGEND_ROWS
        if handles:
            left, bottom, width, _ = self._box(panel)
            self.figure.legend(
                handles[:shown],
                labels[:shown],
                loc="lower center",
                bbox_to_anchor=(left + width / 2, bottom + 2 / self.height_px),
                ncols=min(LEGEND_COLUMNS, len(handles)),
                fontsize=7,
                frameon=False,
                labelcolor=TEXT,
                borderpad=0,
                handlelength=1.5,
                labelspacing=0.3,
            )


def _finite(series: Series) -> list[float]:
    return [value for _, value in series.points if math.isfinite(value)]


def _last(series: Series) -> float:
    finite = _finite(series)
    return finite[-1] if finite else math.nan


def _runs(series: Series) -> list[tuple[float, float, float]]:
    """(start, end, value) of each stretch of equal values, gaps of more than one step apart."""
    runs: list[tuple[float, float, float]] = []
    step = min((b[0] - a[0] for a, b in pairwise(series.points)), default=1.0)
    for time, value in series.points:
        if runs and runs[-1][2] == value and time - runs[-1][1] <= step * 1.5:
            runs[-1] = (runs[-1][0], time, value)
        else:
            runs.append((time, time, value))
    return [(start, end + step, value) for start, end, value in runs]


def _threshold_color(defaults: dict[str, Any], value: float) -> str:
    color = PALETTE[0]
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or (math.isfinite(value) and value >= step["value"]):
            color = NAMED_COLORS.get(step["color"], step["color"])
    return color
