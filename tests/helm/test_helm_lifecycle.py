"""Day two of the chart's Redis pods, with its scripts run as real processes: a pod recreated
with a fresh /sentinel, a scale-down, a cold start with a volume lost, a cold start without
pod 0, a master that comes back empty."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from tests.helm.chart import Rendered
from tests.helm.conftest import StartCommand
from tests.helm.pod import client, wait_until
from tests.helm.pods import PodSet

pytestmark = pytest.mark.integration

FreePorts = Callable[[int], list[int]]
SESSIONS = 200


@pytest.fixture
def make_pods(
    rendered: Rendered, start_command: StartCommand, free_ports: FreePorts, tmp_path: Path
) -> Iterator[Callable[..., PodSet]]:
    def make(count: int = 3, **overrides: str) -> PodSet:
        return PodSet(rendered, start_command, free_ports(2 * count), tmp_path, count, **overrides)

    yield make


def write_sessions(master: str, replicas: int) -> None:
    """Sessions every replica has acknowledged (WAIT), as sessionlib's durability asks."""
    with client(master) as node:
        for i in range(SESSIONS):
            node.hset(f"sessionlib:session:{i}", mapping={"user": f"u{i}", "cart": "[]"})
        assert node.execute_command("WAIT", replicas, 5000) >= replicas


def session_count(address: str) -> int:
    with client(address) as node:
        return sum(1 for _ in node.scan_iter("sessionlib:session:*", count=1000))


def started_healthy(pods: PodSet, *indexes: int) -> str:
    pods.start(*indexes)
    master = pods.wait_for_agreed_master(*indexes)
    wait_until(
        "every sentinel sees a quorum and knows every replica it could promote",
        lambda: all(
            pods.ckquorum(i).startswith("OK") and pods.known_replicas(i) == len(indexes) - 1
            for i in indexes
        ),
        timeout=30,
    )
    return master


# --- first install ------------------------------------------------------------------------


def test_a_first_install_elects_pod_zero_and_every_pod_follows_it(
    make_pods: Callable[..., PodSet],
) -> None:
    pods = make_pods()
    master = started_healthy(pods, 0, 1, 2)

    assert master == pods.pods[0].redis
    wait_until(
        "pods 1 and 2 replicate pod 0",
        lambda: pods.role(1) == "slave" and pods.role(2) == "slave",
    )
    logs = "".join(p.log(c).read_text() for p in pods.pods for c in ("redis", "sentinel"))
    assert f"elected {pods.pods[0].name}:{pods.pods[0].redis_port} master" in logs


# --- stable Sentinel identity ------------------------------------------------------------


def test_pods_recreated_with_new_ips_leave_no_stale_voter_and_a_failover_still_succeeds(
    make_pods: Callable[..., PodSet],
) -> None:
    pods = make_pods()
    started_healthy(pods, 0, 1, 2)

    # Two rollouts recreate pods 1 and 2: each comes back on a new IP behind its name, with an
    # empty /sentinel.
    for rollout in (1, 2):
        for index in (1, 2):
            pods.stop(index)
            pods.lose_sentinel_dir(index)
            pods.move(index, f"127.0.0.{10 * rollout + 100 + index}")
            pods.start(index)
            wait_until(
                f"rollout {rollout}: pod {index} is back",
                lambda index=index: (
                    pods.role(index) == "slave" and bool(pods.sentinel_names(index))
                ),
            )

    # Every sentinel counts exactly the live sentinels and replicas, reachable at their new IPs.
    wait_until(
        "every sentinel sees the two others and the two replicas up",
        lambda: all(pods.sees_everyone_up(i, others=2) for i in range(3)),
        timeout=90,
    )
    for i in range(3):
        assert pods.ckquorum(i).startswith("OK 3 usable Sentinels"), pods.ckquorum(i)

    old_master = pods.wait_for_agreed_master(0, 1, 2)
    pods.stop(pods.index_of(old_master), containers=("redis",), kill=True)
    new_master = pods.wait_for_agreed_master(0, 1, 2, timeout=60)
    assert new_master != old_master


def test_a_sentinel_recreated_in_place_keeps_its_id(make_pods: Callable[..., PodSet]) -> None:
    pods = make_pods()
    started_healthy(pods, 0, 1, 2)
    ids = {i: _myid(pods, i) for i in range(3)}

    pods.stop(2, containers=("sentinel",))
    pods.lose_sentinel_dir(2)
    pods.start(2, containers=("sentinel",))
    wait_until("the recreated sentinel answers", lambda: bool(pods.sentinel_names(2)))

    assert _myid(pods, 2) == ids[2]
    assert len(set(ids.values())) == 3


def _myid(pods: PodSet, index: int) -> str:
    with client(pods.pods[index].sentinel) as sentinel:
        return str(sentinel.execute_command("SENTINEL", "MYID"))


# --- scale-down ---------------------------------------------------------------------------


def test_after_a_scale_down_the_sentinels_forget_the_removed_pod_one_at_a_time(
    make_pods: Callable[..., PodSet],
) -> None:
    pods = make_pods(count=4, QUORUM="2")
    started_healthy(pods, 0, 1, 2, 3)
    wait_until(
        "every sentinel knows the three others",
        lambda: all(len(pods.known_sentinels(i)) == 3 for i in range(4)),
    )
    if pods.index_of(pods.agreed_master(0, 1, 2, 3)) == 3:
        pytest.skip("pod 3 is master; the scale-down would be a failover too")  # never: pod 0

    # kubectl scale --replicas=3: pod 3 is gone, the others keep their environment.
    pods.stop(3, kill=True)

    wait_until(
        "every remaining sentinel knows exactly the two others",
        lambda: all(len(pods.known_sentinels(i)) == 2 for i in range(3)),
        timeout=60,
    )
    resets = sorted(_reset_times(pods, i) for i in range(3))
    assert len(resets) == 3, "each remaining sentinel reset once"
    # Staggered: never two sentinels forgetting their peers at the same moment.
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(resets)]
    assert all(gap >= 2 for gap in gaps), gaps
    for i in range(3):
        assert pods.ckquorum(i).startswith("OK 3 usable Sentinels"), pods.ckquorum(i)

    old_master = pods.agreed_master(0, 1, 2)
    pods.stop(pods.index_of(old_master), containers=("redis",), kill=True)
    assert pods.wait_for_agreed_master(0, 1, 2, timeout=60) != old_master


def _reset_times(pods: PodSet, index: int) -> datetime:
    lines = [
        line
        for line in pods.pods[index].log("sentinel").read_text().splitlines()
        if "SENTINEL RESET" in line
    ]
    assert len(lines) == 1, lines
    stamp = re.match(r"(\S+Z) ", lines[0])
    assert stamp, lines[0]
    return datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%SZ")


# --- cold starts --------------------------------------------------------------------------


def test_a_cold_start_with_pod_zeros_volume_lost_loses_nothing(
    make_pods: Callable[..., PodSet],
) -> None:
    pods = make_pods()
    master = started_healthy(pods, 0, 1, 2)
    assert master == pods.pods[0].redis
    write_sessions(master, replicas=2)

    # Every pod stops (a cluster-wide outage); pod 0 comes back on a new, empty volume, and
    # every pod with a fresh /sentinel.
    pods.stop(0, 1, 2)
    pods.lose_volume(0)
    for index in range(3):
        pods.lose_sentinel_dir(index)
    pods.start(0, 1, 2)

    new_master = pods.wait_for_agreed_master(0, 1, 2)
    assert new_master != pods.pods[0].redis, "the empty node must not become master"
    assert session_count(new_master) == SESSIONS
    wait_until(
        "pod 0 has copied every session from the new master",
        lambda: session_count(pods.pods[0].redis) == SESSIONS,
    )
    assert "parked" in pods.pods[0].log("redis").read_text()


def test_a_cold_start_without_pod_zero_elects_a_master_from_the_others(
    make_pods: Callable[..., PodSet],
) -> None:
    pods = make_pods()
    master = started_healthy(pods, 0, 1, 2)
    write_sessions(master, replicas=2)
    pods.stop(0, 1, 2)
    for index in range(3):
        pods.lose_sentinel_dir(index)

    # Pod 0 never returns (its node is gone, its name no longer resolves); pods 1 and 2 must
    # manage without it.
    pods.publish(0, False)
    pods.start(1, 2)
    new_master = pods.wait_for_agreed_master(1, 2, timeout=90)
    assert pods.index_of(new_master) in (1, 2)
    assert session_count(new_master) == SESSIONS
    wait_until(
        "the two sentinels see a quorum",
        lambda: all(pods.ckquorum(i).startswith("OK") for i in (1, 2)),
        timeout=30,
    )
    assert pods.running(1, "sentinel") and pods.running(2, "sentinel"), "no crash loop"

    # When pod 0 does come back, it joins as a replica and gets everything.
    pods.publish(0)
    pods.start(0)
    wait_until(
        "pod 0 rejoins as a replica with every session",
        lambda: pods.role(0) == "slave" and session_count(pods.pods[0].redis) == SESSIONS,
        timeout=60,
    )
    assert pods.wait_for_agreed_master(0, 1, 2) == new_master


def test_a_master_that_comes_back_empty_never_serves_and_follows_the_new_master(
    make_pods: Callable[..., PodSet],
) -> None:
    pods = make_pods()
    master = started_healthy(pods, 0, 1, 2)
    write_sessions(master, replicas=2)
    index = pods.index_of(master)

    # The master's pod is rescheduled without its volume, before the sentinels notice.
    pods.stop(index, containers=("redis",), kill=True)
    pods.lose_volume(index)
    pods.start(index, containers=("redis",))

    roles: list[str] = []

    def follows_the_new_master() -> bool:
        roles.append(pods.role(index))
        named = pods.agreed_master(0, 1, 2)
        return bool(named) and named != master and roles[-1] == "slave"

    wait_until("the node follows the promoted replica", follows_the_new_master, timeout=60)
    assert "master" not in roles
    wait_until(
        "the node copied every session back",
        lambda: session_count(master) == SESSIONS,
        timeout=30,
    )
    assert "waiting for them to promote a replica" in pods.pods[index].log("redis").read_text()
