"""One standalone redis-server on a port of its own, for tests and tools that need plain Redis.
Same config template and process bookkeeping as the topology, without replicas or sentinels."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import redis

from deploy.local import probes
from deploy.local.configs import render_redis_conf
from deploy.local.errors import PortInUse, TopologyError
from deploy.local.processes import (
    ManagedProcess,
    find_binary,
    liveness,
    port_in_use,
    send_signal,
    spawn,
    stop_processes,
    wait_for_liveness,
)
from deploy.local.spec import Node


class StandaloneRedis:
    """A single redis-server with AOF on; config, log and `data/` live in `run_dir`."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        port: int,
        host: str = "127.0.0.1",
        password: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.node = Node("redis", "redis", host, port)
        self.password = password
        self._process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        return self.node.host

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def url(self) -> str:
        """`redis://[:password@]host:port/0`, as redis-py's `from_url` takes it."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def client(self) -> redis.Redis:
        """A sync client that fails fast instead of retrying (close it after)."""
        return probes.connect(self.node, probes.Login(password=self.password))

    def start(self, timeout: float = 10.0) -> None:
        """Start with empty data and return once it answers PING."""
        if port_in_use(self.host, self.port):
            raise PortInUse(f"port {self.port} on {self.host} is already in use")
        data = self.run_dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        config = self.run_dir / "redis.conf"
        config.write_text(
            render_redis_conf(
                host=self.host,
                port=self.port,
                directory=data,
                password=self.password,
                replica_of=None,
                # Alone, it has no replica to wait for: writes must not need one.
                min_replicas_to_write=0,
                min_replicas_max_lag=10,
            )
        )
        self._process = ManagedProcess(
            name="redis",
            kind="redis",
            argv=[find_binary("redis-server"), str(config)],
            port=self.port,
            host=self.host,
            log=str(self.run_dir / "redis.log"),
            cwd=str(data),
        )
        self._launch(timeout)

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF and exits), SIGKILL if it does not."""
        stop_processes([self._started()])

    def __enter__(self) -> StandaloneRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: like a crash, writes of the last second may be lost."""
        process = self._started()
        send_signal(process, signal.SIGKILL)
        wait_for_liveness(process, "dead", timeout=5.0)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, like a hung server."""
        process = self._started()
        send_signal(process, signal.SIGSTOP)
        wait_for_liveness(process, "paused", timeout=5.0)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        process = self._started()
        send_signal(process, signal.SIGCONT)
        wait_for_liveness(process, "alive", timeout=5.0)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port with the data it had (stopping it first if needed)."""
        stop_processes([self._started()])
        self._launch(timeout)

    def is_running(self) -> bool:
        """Whether the process is alive or paused."""
        return self._process is not None and liveness(self._process) != "dead"

    def _started(self) -> ManagedProcess:
        if self._process is None:
            raise TopologyError(f"redis on {self.node.address} was never started")
        return self._process

    def _launch(self, timeout: float) -> None:
        process = self._started()
        spawn(process)
        probes.wait_until(
            time.monotonic() + timeout,
            f"redis on {self.node.address} did not answer within {timeout:g}s (log: {process.log})",
            lambda: probes.ping_problems(self.node, probes.Login(password=self.password)),
            [process],
        )
