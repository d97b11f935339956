"""Draws a run as a PNG: operations per second, errors per second by type and write latency,
over time, with the faults, repairs and announcements of a new master marked."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on CI
import matplotlib.pyplot as plt

from tests.chaos.records import RunRecord

BIN_SECONDS = 0.25


def _per_second(times: list[float], bins: int) -> list[float]:
    counts = [0] * bins
    for t in times:
        counts[min(int(t / BIN_SECONDS), bins - 1)] += 1
    return [c / BIN_SECONDS for c in counts]


def plot_timeline(record: RunRecord, title: str, path: Path) -> None:
    end = max([record.now(), *(op.finished for op in record.operations)])
    bins = int(end / BIN_SECONDS) + 1
    x = [i * BIN_SECONDS for i in range(bins)]
    figure, (rates, errors, latency) = plt.subplots(3, 1, sharex=True, figsize=(12, 8))
    figure.suptitle(title)

    for kind, colour in (("write", "tab:blue"), ("read", "tab:orange")):
        done = [op.finished for op in record.of_kind(kind) if op.ok]
        rates.plot(x, _per_second(done, bins), colour, label=f"{kind}s ok/s", linewidth=1)
    rates.set_ylabel("operations/s")

    failures: dict[str, list[float]] = defaultdict(list)
    for op in record.operations:
        if not op.ok:
            failures[f"{op.kind}: {op.error}"].append(op.finished)
    for label, times in sorted(failures.items()):
        errors.plot(x, _per_second(times, bins), label=label, linewidth=1)
    errors.set_ylabel("errors/s")

    # NaN leaves a gap in the line where no write finished at all.
    slowest = [math.nan] * bins
    by_bin: dict[int, list[float]] = defaultdict(list)
    for op in record.of_kind("write"):
        by_bin[min(int(op.finished / BIN_SECONDS), bins - 1)].append(op.finished - op.started)
    medians = [math.nan] * bins
    for i, latencies in by_bin.items():
        latencies.sort()
        medians[i] = 1000 * latencies[len(latencies) // 2]
        slowest[i] = 1000 * latencies[-1]
    latency.plot(x, medians, "tab:green", label="write latency p50", linewidth=1, marker=".", ms=3)
    latency.plot(x, slowest, "tab:red", label="write latency max", linewidth=1, marker=".", ms=3)
    latency.set_yscale("symlog", linthresh=10)
    latency.set_ylabel("ms")
    latency.set_xlabel("seconds since the load started")

    _mark_events(record, (rates, errors, latency))
    for axes in (rates, errors, latency):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="upper right", fontsize="small")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _mark_events(record: RunRecord, axes_list: tuple[plt.Axes, ...]) -> None:
    # Every sentinel announces the switch, some a moment later: the first after a fault counts.
    announced = [m.time for m in record.switches()]
    faults = [m.time for m in record.marks_of("fault")]
    switches = [min(t for t in announced if t > f) for f in faults if any(t > f for t in announced)]
    for axes in axes_list:
        for mark in record.marks_of("fault"):
            axes.axvline(mark.time, color="red", linewidth=1.5)
        for mark in record.marks_of("heal"):
            axes.axvline(mark.time, color="grey", linestyle="--", linewidth=1)
        for t in switches:
            axes.axvline(t, color="green", linestyle=":", linewidth=1.5)
    top = axes_list[0]
    for mark in record.marks_of("fault"):
        top.annotate(
            mark.label,
            (mark.time, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize="x-small",
            color="red",
        )
    for t in switches:
        top.annotate(
            "new master",
            (t, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="left",
            fontsize="x-small",
            color="green",
        )
