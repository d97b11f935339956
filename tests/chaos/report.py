"""The chaos report: `.run/chaos/chaos-report.json` (one entry per scenario run), a PNG
timeline per scenario, and the summary table that `python -m tests.chaos.report` prints."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from sessionlib.config import Settings
from tests.chaos.checker import Verdict, median_and_max
from tests.chaos.profile import ChaosProfile
from tests.chaos.records import RunRecord
from tests.chaos.scenarios import Observations
from tests.chaos.timeline import plot_timeline

REPORT_DIR = Path(
    os.environ.get("CHAOS_REPORT_DIR", Path(__file__).resolve().parents[2] / ".run" / "chaos")
)
REPORT_FILE = REPORT_DIR / "chaos-report.json"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _spread(values: list[float]) -> dict[str, Any]:
    median, maximum = median_and_max(values)
    return {
        "each": [round(v, 3) for v in values],
        "median": _rounded(median),
        "max": _rounded(maximum),
    }


def _lost_shortly_before_a_fault(verdict: Verdict, record: RunRecord, seconds: float) -> int:
    faults = [m.time for m in record.marks_of("fault")]
    return sum(any(0 <= f - w.finished <= seconds for f in faults) for w in verdict.lost)


def entry(
    verdict: Verdict,
    observations: Observations,
    record: RunRecord,
    settings: Settings,
    profile: ChaosProfile,
) -> dict[str, Any]:
    """One scenario run as JSON-ready data."""
    windows = verdict.windows
    durability = settings.session.durability
    return {
        "profile": profile.name,
        "mode": settings.redis.mode,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_seconds": round(record.now(), 1),
        "workers": profile.workers,
        "durability": f"WAIT {durability.replicas}, on shortfall {durability.on_shortfall}"
        if durability.replicas
        else "off",
        "stale_reads": settings.session.stale_reads_during_failover,
        "retry_deadline_seconds": settings.redis.retry.deadline_seconds,
        "faults": [f"{m.time:.3f}s {m.label}" for m in record.marks_of("fault")],
        "write_outage_seconds": _spread(verdict.outages),
        "error_window_seconds": _spread(
            [w.error_window_seconds for w in windows if w.error_window_seconds is not None]
        ),
        "switch_master_to_first_write_seconds": _spread(
            [
                w.switch_to_first_write_seconds
                for w in windows
                if w.switch_to_first_write_seconds is not None
            ]
        ),
        "faults_followed_by_switch_master": sum(w.switch_master is not None for w in windows),
        "writes_failed_after_switch_master": sum(w.failed_after_switch for w in windows),
        "lost_acknowledged_writes": len(verdict.lost),
        "lost_acknowledged_within_1s_before_a_fault": _lost_shortly_before_a_fault(
            verdict, record, 1.0
        ),
        "sessions_holding_a_never_written_value": len(verdict.phantom_sessions),
        "writes": {
            "attempted": verdict.writes,
            "acknowledged": verdict.writes_acknowledged,
            "acknowledged_after_last_fault": verdict.acknowledged_after_last_fault,
        },
        "reads": {
            "attempted": verdict.reads,
            "succeeded": verdict.reads_ok,
            "availability": round(verdict.read_availability, 5),
            "attempted_during_outages": sum(w.reads_in_outage for w in windows),
            "succeeded_during_outages": sum(w.reads_ok_in_outage for w in windows),
            "served_by_replicas": verdict.reads_from_replicas,
            "behind_an_acknowledged_write": verdict.reads_behind,
        },
        "errors_by_type": verdict.errors,
        "error_examples": record.error_examples,
        "observations": observations,
    }


def save(name: str, data: dict[str, Any], record: RunRecord) -> Path:
    """Add (or replace) scenario `name` in the report and draw its timeline next to it."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    png = REPORT_DIR / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
    plot_timeline(record, f"{name}  [{data['durability']}]", png)
    report = json.loads(REPORT_FILE.read_text()) if REPORT_FILE.exists() else {"scenarios": {}}
    report["scenarios"][name] = {**data, "timeline_png": str(png)}
    REPORT_FILE.write_text(json.dumps(report, indent=2) + "\n")
    return png


def _seconds(spread: dict[str, Any]) -> str:
    if spread["median"] is None:
        return "-"
    return f"{spread['median']:.2f} / {spread['max']:.2f}"


def _redirections(counts: dict[str, int] | None) -> str:
    """MOVED and ASK replies the cluster's nodes sent during the run; "-" without a cluster."""
    return "-" if counts is None else f"{counts['MOVED']}/{counts['ASK']}"


def summary_table(report: dict[str, Any]) -> str:
    """One line per scenario: the figures a reader of the README wants."""
    header = (
        "scenario",
        "faults",
        "outage s med/max",
        "switch->write s",
        "lost acked",
        "writes acked",
        "write errors",
        "read avail",
        "MOVED/ASK",
    )
    rows = [header]
    for name, s in report["scenarios"].items():
        errors = s["errors_by_type"].get("write", {})
        rows.append(
            (
                name,
                str(len(s["faults"])),
                _seconds(s["write_outage_seconds"]),
                _seconds(s["switch_master_to_first_write_seconds"]),
                str(s["lost_acknowledged_writes"]),
                f"{s['writes']['acknowledged']}/{s['writes']['attempted']}",
                ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "0",
                f"{100 * s['reads']['availability']:.2f}%",
                _redirections(s.get("redirections")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    if not REPORT_FILE.exists():
        print(f"no chaos report at {REPORT_FILE}; run `make chaos` first", file=sys.stderr)
        return 1
    print(summary_table(json.loads(REPORT_FILE.read_text())))
    print(f"\nfull report: {REPORT_FILE}; timelines: {REPORT_DIR}/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
