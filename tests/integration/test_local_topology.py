"""The local Redis HA topology tool against real redis-server and redis-sentinel processes.
Each test states one behaviour that `make up-local`, the fixtures and the chaos suite rely on."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import redis

from deploy.local.processes import ManagedProcess, RunState, save_state
from deploy.local.standalone import StandaloneRedis
from deploy.local.topology import STATE_FILE, LocalTopology
from tests.support.topology_cli import run_topology_cli, stack_port_flags

pytestmark = pytest.mark.integration

# Sentinel turns a returning old master into a replica only after watching it for ~8 s and
# its next 10 s INFO round, so a rejoin takes up to ~20 s.
REJOIN_TIMEOUT = 40.0

FreePorts = Callable[[int], list[int]]


def live_processes_on(ports: Iterable[int]) -> list[str]:
    """Command lines of running (not zombie) processes whose title names one of `ports`."""
    wanted = {f":{port}" for port in ports}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and any(word.endswith(tuple(wanted)) for word in cmdline.split()):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture
def cli_run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run dir for CLI tests; whatever the CLI left running there is stopped afterwards."""
    run_dir = tmp_path / "cli-run"
    yield run_dir
    LocalTopology(run_dir).down()


def write_crashed_run(run_dir: Path, pids: list[int]) -> None:
    """A state file as a run leaves it when the tool and its processes died mid-way."""
    processes = [
        ManagedProcess(
            name=f"redis-{i}",
            kind="redis",
            argv=["/usr/bin/redis-server", str(run_dir / f"redis-{i}" / "redis.conf")],
            port=port,
            log=str(run_dir / "logs" / f"redis-{i}.log"),
            pid=pid,
        )
        for i, (pid, port) in enumerate(zip(pids, [6380, 6381, 6382], strict=False), 1)
    ]
    save_state(run_dir / STATE_FILE, RunState(settings={}, processes=processes))


def finished_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_up_brings_one_master_two_linked_replicas_and_three_agreeing_sentinels(
    shared_topology: LocalTopology,
) -> None:
    master, *replicas = shared_topology.redis_nodes

    with shared_topology.client(master) as client:
        assert client.execute_command("ROLE")[0] == "master"
    for replica in replicas:
        with shared_topology.client(replica) as client:
            info = client.info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == (
            "slave",
            master.port,
            "up",
        )
    for sentinel in shared_topology.sentinel_nodes:
        with shared_topology.client(sentinel) as client:
            name = shared_topology.master_name
            named = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
            state = client.execute_command("SENTINEL", "MASTER", name)
            quorum = client.execute_command("SENTINEL", "CKQUORUM", name)
        fields = dict(zip(state[::2], state[1::2], strict=True))
        assert f"{named[0]}:{named[1]}" == master.address
        assert (fields["num-slaves"], fields["num-other-sentinels"]) == ("2", "2")
        assert quorum.startswith("OK")
    assert shared_topology.master_address() == master.address


def test_killing_the_master_elects_a_new_one_and_the_restarted_old_master_rejoins_as_replica(
    local_topology: LocalTopology,
) -> None:
    old = local_topology.master_address()

    old_node = local_topology.kill("master")
    new = local_topology.wait_for_failover(old, timeout=30)
    local_topology.restart(old_node)
    local_topology.wait_for_replica(old_node, timeout=REJOIN_TIMEOUT)

    assert new != old
    # Every sentinel names the new master and the old one replicates it.
    master = local_topology.wait_for_health(timeout=REJOIN_TIMEOUT)
    assert master == new
    for sentinel in local_topology.sentinel_nodes:
        with local_topology.client(sentinel) as client:
            named = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", local_topology.master_name
            )
        assert f"{named[0]}:{named[1]}" == master
    with local_topology.client(old_node) as client:
        role = client.execute_command("ROLE")
    assert (role[0], f"{role[1]}:{role[2]}") == ("slave", master)


@pytest.mark.parametrize("mode", ["plain", "secure"])
def test_a_killed_master_is_failed_over_once_and_no_sentinel_ever_counts_its_successor_down(
    mode: str, request: pytest.FixtureRequest
) -> None:
    """Sentinel connects to an address at most once a second, and a sentinel that switches to
    the new master starts its down-after clock at the switch: with down-after too close to
    that second, it counts a healthy new master down before it has even connected, and the
    first failover's votes, still fresh, make that a second failover (DESIGN §3's timings)."""
    topology: LocalTopology = request.getfixturevalue(
        "local_topology" if mode == "plain" else "secure_topology"
    )
    old = topology.master_address()

    topology.kill("master")
    new = topology.wait_for_failover(old, timeout=30)
    # Every sentinel has switched by now: give each one down-after with the new master, and
    # a second more for its last check.
    time.sleep(topology.spec.down_after_ms / 1000 + 1.0)

    host, port = new.rsplit(":", 1)
    logs = {p.name: Path(p.log) for p in topology.processes if p.kind == "sentinel"}
    for sentinel in topology.sentinel_nodes:
        with topology.client(sentinel) as client:
            state = client.sentinel_master(topology.master_name)
        assert (state["ip"], str(state["port"]), state["config-epoch"]) == (host, port, 1)
        assert not (state["is_sdown"] or state["is_odown"]), state["flags"]
        log = logs[sentinel.name].read_text()
        assert f"+sdown master {topology.master_name} {host} {port}" not in log, sentinel.name


def test_pausing_the_master_beyond_down_after_fails_over_and_the_resumed_one_refuses_writes(
    local_topology: LocalTopology,
) -> None:
    old = local_topology.master_address()

    old_node = local_topology.pause("master")
    new = local_topology.wait_for_failover(old, timeout=30)
    local_topology.resume(old_node)
    local_topology.wait_for_replica(old_node, timeout=REJOIN_TIMEOUT)

    assert new != old
    with local_topology.client(old_node) as client, pytest.raises(redis.ReadOnlyError):
        client.set("written-to-the-old-master", "must fail")
    with local_topology.client(new) as client:
        assert client.set("written-to-the-new-master", "ok")


def test_down_stops_every_process_including_paused_ones_and_forgets_them(
    local_topology: LocalTopology,
) -> None:
    pids = [p.pid for p in local_topology.processes]
    ports = [n.port for n in [*local_topology.redis_nodes, *local_topology.sentinel_nodes]]
    local_topology.pause("redis-2")

    stopped = local_topology.down()

    assert len(stopped) == 6
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"
    assert live_processes_on(ports) == []
    assert not local_topology.state_path.exists()
    assert local_topology.down() == []


def test_cli_up_status_master_and_down_work_end_to_end(
    cli_run_dir: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(8)
    run_dir = ["--run-dir", str(cli_run_dir)]

    up = run_topology_cli("up", *stack_port_flags(ports), *run_dir)
    status = run_topology_cli("status", *run_dir)
    master = run_topology_cli("master", *run_dir)
    down = run_topology_cli("down", *run_dir)
    down_again = run_topology_cli("down", *run_dir)

    assert up.returncode == 0, up.stderr
    for port in ports:
        assert f"127.0.0.1:{port}" in up.stdout
    assert f"stop it with: python -m deploy.local down --run-dir {cli_run_dir}" in up.stdout
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" alive ") == 8, "3 Redis, 3 sentinels, cart and gateway"
    assert f"gateway  http://127.0.0.1:{ports[6]}" in status.stdout
    assert f"master (per sentinels): 127.0.0.1:{ports[0]}" in status.stdout
    assert master.stdout.strip() == f"127.0.0.1:{ports[0]}"
    assert down.returncode == 0
    assert down.stdout.startswith("stopped cart, gateway, sentinel-1, sentinel-2, sentinel-3")
    assert (down_again.returncode, down_again.stdout.startswith("nothing to stop")) == (0, True)
    assert live_processes_on(ports) == []


def test_up_on_a_port_in_use_names_it_and_starts_nothing(
    cli_run_dir: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(6)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[1]))
        squatter.listen()

        result = run_topology_cli("up", *stack_port_flags(ports), "--run-dir", str(cli_run_dir))

    assert result.returncode == 1
    assert f"port {ports[1]} on 127.0.0.1" in result.stderr
    assert "--redis-ports" in result.stderr
    assert "make down-local" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cli_run_dir / STATE_FILE).exists()
    assert live_processes_on(ports) == []


def test_up_without_redis_binaries_names_them_and_how_to_install(
    cli_run_dir: Path, free_ports: FreePorts, tmp_path: Path
) -> None:
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()

    result = run_topology_cli(
        "up", *stack_port_flags(free_ports(6)), "--run-dir", str(cli_run_dir), path=str(empty_bin)
    )

    assert result.returncode == 1
    assert "`redis-server` was not found on PATH" in result.stderr
    assert "make setup" in result.stderr
    assert "apt-get install redis-server redis-sentinel redis-tools" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_after_a_crashed_run_removes_its_stale_state_and_starts(
    cli_run_dir: Path, free_ports: FreePorts
) -> None:
    write_crashed_run(cli_run_dir, [finished_pid(), finished_pid()])

    result = run_topology_cli("up", *stack_port_flags(free_ports(8)), "--run-dir", str(cli_run_dir))

    assert result.returncode == 0, result.stderr
    assert "processes are all gone (crashed?); removing it" in result.stderr
    assert LocalTopology(cli_run_dir).is_running()


def test_down_after_a_crashed_run_removes_its_state_and_never_signals_a_recycled_pid(
    cli_run_dir: Path,
) -> None:
    # A pid recorded for redis-2 that now belongs to an unrelated program.
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        write_crashed_run(cli_run_dir, [finished_pid(), unrelated.pid])

        result = run_topology_cli("down", "--run-dir", str(cli_run_dir))

        assert result.returncode == 0
        assert "was still running (crashed run?); removed its state file" in result.stdout
        assert unrelated.poll() is None
        assert not (cli_run_dir / STATE_FILE).exists()
    finally:
        unrelated.kill()
        unrelated.wait()


def test_up_while_running_refuses_and_says_how_to_stop_it(
    shared_topology: LocalTopology,
) -> None:
    result = run_topology_cli("up", "--run-dir", str(shared_topology.run_dir))

    assert result.returncode == 1
    assert "already running" in result.stderr
    assert f"down --run-dir {shared_topology.run_dir}" in result.stderr
    assert "Traceback" not in result.stderr
    assert shared_topology.master_address() == shared_topology.redis_nodes[0].address


def test_standalone_redis_keeps_acknowledged_writes_across_a_kill_and_restart(
    redis_server: StandaloneRedis,
) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        client.set("survives", "yes")

    redis_server.kill()
    redis_server.restart()

    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        assert client.get("survives") == "yes"


def test_up_that_is_not_ready_in_time_names_what_is_missing_and_stops_what_it_started(
    cli_run_dir: Path, free_ports: FreePorts
) -> None:
    ports = free_ports(6)

    # Sentinels need about 2 s of hello messages to find each other: 0.5 s is too short.
    result = run_topology_cli(
        "up", *stack_port_flags(ports), "--run-dir", str(cli_run_dir), "--timeout", "0.5"
    )

    assert result.returncode == 1
    assert "after 0.5s" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cli_run_dir / STATE_FILE).exists()
    assert live_processes_on(ports) == []
