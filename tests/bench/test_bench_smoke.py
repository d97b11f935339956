"""`python -m bench --quick` works end to end and writes a well-formed record: the benchmark
code is proven here, never the speed (figures vary with the machine and are not asserted)."""

import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUN_SECONDS = 240
FIGURE_KEYS = {"median", "p25", "p75", "min", "max", "n"}


def run_quick_bench(out: Path) -> tuple[str, dict]:
    argv = [sys.executable, "-m", "bench", "--quick"]
    argv += ["--output", str(out / "latest.json"), "--run-dir", str(out / "run")]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGINT, not SIGKILL: the run stops the Redis and app processes it started.
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"the quick bench ran over {RUN_SECONDS}s:\n{output.decode()[-3000:]}")
    assert process.returncode == 0, output.decode()[-5000:]
    return output.decode(), json.loads((out / "latest.json").read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (`make bench` installs it)")
    return run_quick_bench(tmp_path_factory.mktemp("bench"))


def is_figure(figure: dict, rounds: int) -> bool:
    values = [figure[key] for key in ("median", "p25", "p75", "min", "max")]
    return (
        set(figure) == FIGURE_KEYS
        and figure["n"] == rounds
        and all(math.isfinite(v) and v >= 0 for v in values)
        and figure["min"] <= figure["p25"] <= figure["median"] <= figure["p75"] <= figure["max"]
    )


def test_a_quick_run_prints_every_table_and_names_the_record(quick):
    output, _ = quick
    for title in (
        "Library level",
        "HTTP level",
        "Redis commands",
        "Failover, Sentinel mode",
        "Failover, Cluster mode",
        "Memory",
        "(g) sessionlib, near cache",
        "Near cache, library level",
        "Reads through a master SIGKILL",
    ):
        assert title in output
    assert "figures written to" in output


def test_the_record_says_what_was_measured_on_and_with_what(quick):
    _, record = quick
    assert record["machine"]["cores"] >= 1
    assert record["versions"]["redis-server"] and record["versions"]["starsessions"]
    assert len(record["load_average"]["start"]) == len(record["load_average"]["end"]) == 3
    assert set(record["sections"]) == {
        "library",
        "round_trips",
        "http",
        "memory",
        "failover",
        "near_cache_failover",
        "cluster_failover",
        "near_cache",
    }
    for section in record["sections"].values():
        assert len(section["load_average"]) == 3


def test_library_figures_come_per_round_with_spread_and_a_ratio_to_raw_redis_py(quick):
    _, record = quick
    rounds = record["plan"]["library_rounds"]
    for operation in ("load", "save"):
        for concurrency in ("1", "64"):
            comparison = record["library"][operation][concurrency]
            assert comparison["reference"] == "redis-py"
            for figures in comparison["variants"].values():
                assert len(figures["rounds"]) == rounds
                for metric in ("rate", "p50_ms", "p99_ms", "python_cpu_us", "ratio_to_reference"):
                    assert is_figure(figures[metric], rounds), (operation, concurrency, metric)
            assert comparison["variants"]["redis-py"]["ratio_to_reference"]["median"] == 1


def test_encryption_at_rest_is_measured_as_a_ratio_to_plain_sessionlib(quick):
    output, record = quick
    rounds = record["plan"]["library_rounds"]
    for operation in ("load", "save"):
        for concurrency in ("1", "64"):
            variants = record["library"][operation][concurrency]["variants"]
            assert is_figure(variants["sessionlib + encryption"]["ratio_to_sessionlib"], rounds)
    assert "ops/s of sessionlib + encryption over sessionlib" in output


def test_http_figures_cover_seven_apps_and_two_mixes_relative_to_sessionlib(quick):
    _, record = quick
    rounds = record["plan"]["http_rounds"]
    assert set(record["http"]) == {"read-only", "read-write"}
    for comparison in record["http"].values():
        assert comparison["reference"] == "sessionlib"
        assert set(comparison["variants"]) == {
            "none",
            "sessionlib",
            "starsessions",
            "starlette-cookie",
            "sessionlib-sentinel",
            "sessionlib-cluster",
            "sessionlib-near",
        }
        for figures in comparison["variants"].values():
            assert is_figure(figures["rate"], rounds) and figures["rate"]["median"] > 0
            assert is_figure(figures["ratio_to_reference"], rounds)


def test_cluster_mode_requests_per_second_come_as_a_ratio_to_sentinel_mode_per_round(quick):
    output, record = quick
    rounds = record["plan"]["http_rounds"]
    for comparison in record["http"].values():
        cluster = comparison["variants"]["sessionlib-cluster"]
        assert is_figure(cluster["ratio_to_sentinel"], rounds)
        assert len(cluster["rounds"]) == rounds
    assert "Requests/s of (f) over (e), round by round" in output


def test_the_near_cache_app_comes_as_a_ratio_to_cookies_with_its_hit_ratio_per_round(quick):
    output, record = quick
    rounds = record["plan"]["http_rounds"]
    for mix, comparison in record["http"].items():
        near = comparison["variants"]["sessionlib-near"]
        assert is_figure(near["ratio_to_cookie"], rounds)
        assert is_figure(near["hit_ratio"], rounds)
        assert 0 <= near["hit_ratio"]["min"] <= near["hit_ratio"]["max"] <= 1
        for counted in near["near_cache_rounds"]:
            assert counted["lookups"] > 0 and counted["requests"] > 0
            assert math.isclose(sum(counted["by_result"].values()), counted["lookups"])
        assert record["near_cache"]["http"][mix]["hit_ratio"] == near["hit_ratio"]
    assert "Requests/s of (g) over (d), round by round" in output


def test_a_logout_elsewhere_is_timed_until_the_near_cache_refuses_the_id(quick):
    _, record = quick
    invalidation = record["near_cache"]["invalidation"]
    assert invalidation["logouts"] == record["plan"]["near_cache_logouts"]
    assert 0 < invalidation["p50_ms"] <= invalidation["p99_ms"] <= invalidation["max_ms"]
    assert is_figure(invalidation["latency_ms"], invalidation["logouts"])
    answered = invalidation["answered_after_logout"]
    assert 0 <= answered["max"] <= answered["total"]


def test_memory_per_cached_session_is_counted_by_the_cache_and_by_tracemalloc(quick):
    _, record = quick
    memory = record["near_cache"]["memory"]
    assert memory["sessions"] >= record["plan"]["near_cache_sessions"]
    # The cached hash holds at least the session's own names and values.
    assert memory["size_bytes_per_session"] >= memory["payload_bytes"] > 0
    assert memory["traced_bytes_per_session"] > 0


def test_reads_through_a_master_kill_are_counted_with_and_without_the_near_cache(quick):
    _, record = quick
    reads = record["near_cache"]["failover_reads"]
    assert len(reads["rounds"]) == record["plan"]["near_cache_failovers"]
    for kill in reads["rounds"]:
        assert kill["new_master"] != kill["killed"]
        assert set(kill["stores"]) == {"near cache", "no near cache"}
    for figures in reads["stores"].values():
        assert figures["reads"] > 0
        assert sum(figures["outcomes"].values()) == figures["reads"]
        assert 0 <= figures["served_in_time_share"] <= figures["served_share"] <= 1
    # Only the store with the near cache has a copy of its own to serve flagged stale.
    assert reads["stores"]["no near cache"]["outcomes"]["stale"] == 0


def test_round_trips_split_what_the_app_sent_from_what_scripts_ran(quick):
    _, record = quick
    for library in ("sessionlib", "starsessions", "sessionlib-cluster"):
        for kind in ("read", "write"):
            counts = record["round_trips"][library][kind]
            assert counts["sent_per_request"] >= 1
            assert math.isclose(
                counts["sent_per_request"] + counts["in_scripts_per_request"],
                counts["commands_per_request"],
            )
            assert math.isclose(sum(counts["by_command"].values()), counts["commands_per_request"])


def test_round_trips_of_the_near_cache_app_are_counted_on_its_redis(quick):
    _, record = quick
    for kind in ("read", "write"):
        counts = record["round_trips"]["sessionlib-near"][kind]
        assert counts["sent_per_request"] >= 0
        assert math.isclose(
            counts["sent_per_request"] + counts["in_scripts_per_request"],
            counts["commands_per_request"],
        )
    # A write goes through to Redis whatever the cache holds.
    assert record["round_trips"]["sessionlib-near"]["write"]["sent_per_request"] >= 1


def test_round_trips_in_cluster_mode_are_counted_on_every_master(quick):
    _, record = quick
    for kind in ("read", "write"):
        assert record["round_trips"]["sessionlib-cluster"][kind]["nodes"] == 3


@pytest.mark.parametrize("mode", ["failover", "cluster_failover"])
def test_failover_times_both_clients_on_the_same_kills(quick, mode):
    _, record = quick
    failover = record[mode]
    assert len(failover["rounds"]) == record["plan"]["failovers"]
    for kill in failover["rounds"]:
        assert kill["new_master"] != kill["killed"]
        assert set(kill["outage_seconds"]) == set(kill["steady_outage_seconds"])
        assert set(kill["outage_seconds"]) == {"sessionlib", "redis-py"}
        for client, first in kill["outage_seconds"].items():
            steady = kill["steady_outage_seconds"][client]
            assert first is None or first > 0
            # All succeeding comes at the first success or after it.
            assert steady is None or (first is not None and steady >= first)
    for figures in failover["clients"].values():
        assert 0 <= figures["calls_failed"] <= figures["calls_started"]


def test_memory_shows_the_shipped_limits_keep_a_session_hash_listpack_encoded(quick):
    _, record = quick
    sessionlib = record["memory"]["layouts"]["sessionlib"]
    assert sessionlib["redis-defaults"]["encoding"] == "hashtable"
    assert sessionlib["shipped"]["encoding"] == "listpack"
    assert record["memory"]["configurations"]["redis-defaults"]["hash-max-listpack-value"] == "64"
