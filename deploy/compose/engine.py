"""A Docker engine of our own: Debian's dockerd on a private socket, data root and cgroup.
It never touches a system engine, leaves no network setup behind, and stops what it started."""

# The daemon runs with `--bridge none --iptables=false`, so containers use host networking (the
# only kind that needs no bridge or NAT rules) and talk over loopback. Images persist in the data
# root between runs, which is what makes a second run fast; containers and volumes never do.

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger("deploy.compose.engine")

DEFAULT_STATE_DIR = Path(".run/docker")
INSTALL_HINT = "install Debian's engine: apt-get install docker.io (it brings dockerd)"
# Exec roots live in /tmp whatever TMPDIR says: containerd's socket paths below them must stay
# under the 108-byte limit of unix socket addresses.
EXEC_DIR_PARENT = "/tmp"  # noqa: S108
EXEC_DIR_PREFIX = "sld-"


class EngineError(RuntimeError):
    """The private engine could not be started, used or stopped."""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (a private path of one engine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and text in _cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def _terminate(pids: Sequence[int], grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL whatever still runs after the grace period."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        alive = [pid for pid in pids if _cmdline(pid)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _cmdline(pid)]
            time.sleep(0.1)
        if not alive:
            return


class PrivateDockerEngine:
    """dockerd with its own socket, data root (`state_dir/data-root`, kept for the image
    cache), exec root (a short temp dir: unix socket paths are limited to 108 bytes) and
    cgroup parent. One engine per state dir at a time, guarded by a lock file."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir.resolve()
        self.data_root = self.state_dir / "data-root"
        self.log_path = self.state_dir / "dockerd.log"
        self._record = self.state_dir / "engine.json"
        self._lock: IO[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._exec_dir: Path | None = None
        # Unique per state dir, so a crashed run's containers can be found and ended later.
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        self.cgroup_parent = f"sessionlib-docker-{digest}"

    @property
    def host(self) -> str:
        if self._exec_dir is None:
            raise EngineError("the engine is not running")
        return f"unix://{self._exec_dir / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        """The environment for docker/compose commands that must reach this engine only."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        # A user's CLI config (contexts, credential helpers) must not redirect or slow us.
        env["DOCKER_CONFIG"] = str(self.state_dir / "cli-config")
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` against this engine and return its captured output."""
        result = subprocess.run(
            ["docker", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            # A failed build explains itself on stdout (the step's output), the CLI on stderr.
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-40:])
            raise EngineError(f"docker {' '.join(args)} failed ({result.returncode}):\n{tail}")
        return result

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until it answers; end a crashed run's leftovers first."""
        dockerd = shutil.which("dockerd")
        if dockerd is None or shutil.which("docker") is None:
            raise EngineError(f"dockerd or docker is missing; {INSTALL_HINT}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._end_leftovers()
            self._spawn(dockerd)
            self._wait_ready(timeout)
            # A crashed run's containers restart with the daemon (restart policies) and would
            # hold their ports: start from images only.
            self.remove_containers_and_volumes()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, dockerd: str) -> None:
        self._exec_dir = Path(tempfile.mkdtemp(prefix=EXEC_DIR_PREFIX, dir=EXEC_DIR_PARENT))
        argv = [
            dockerd,
            f"--host={self.host}",
            f"--data-root={self.data_root}",
            f"--exec-root={self._exec_dir / 'exec'}",
            f"--pidfile={self._exec_dir / 'dockerd.pid'}",
            f"--cgroup-parent={self.cgroup_parent}",
            # No docker0 bridge, no iptables/NAT rules on the host: host networking only.
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--log-level=warn",
        ]
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._record.write_text(
            json.dumps({"pid": self._process.pid, "exec_dir": str(self._exec_dir)})
        )

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EngineError(
                    f"dockerd exited with {self._process.returncode}; see {self.log_path}"
                )
            if self.docker("version", check=False, timeout=10).returncode == 0:
                log.info("dockerd %s is up on %s", self._process.pid, self.host)
                return
            time.sleep(0.3)
        raise EngineError(f"dockerd did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Remove every container and volume, stop dockerd and anything it left running."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(EngineError, subprocess.TimeoutExpired):
                self.remove_containers_and_volumes()
            _terminate([self._process.pid], grace_seconds=30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
        if self._exec_dir is not None:
            # containerd and its shims outlive a dockerd that was killed; their command lines
            # all carry this engine's private exec root.
            _terminate(_pids_mentioning(str(self._exec_dir)), grace_seconds=5)
            self._kill_cgroup()
            _unmount_below(self._exec_dir)
            _unmount_below(self.data_root)
            shutil.rmtree(self._exec_dir, ignore_errors=True)
        self._record.unlink(missing_ok=True)
        self._process = None
        self._exec_dir = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def remove_containers_and_volumes(self) -> None:
        """Leave only images behind (the cache): every container, volume and network goes."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, timeout=120)
        self.docker("volume", "prune", "-f")
        self.docker("network", "prune", "-f")

    def _acquire_lock(self, timeout: float = 600) -> None:
        lock = (self.state_dir / "engine.lock").open("w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise EngineError(
                        f"another run holds {self.state_dir}/engine.lock for too long"
                    ) from None
                time.sleep(1)
        self._lock = lock

    def _end_leftovers(self) -> None:
        """A run that was killed may have left dockerd, containerd and containers running."""
        try:
            record = json.loads(self._record.read_text())
        except (OSError, ValueError):
            return
        pid, exec_dir = record.get("pid"), record.get("exec_dir")
        log.warning("ending what a crashed run left behind (dockerd %s, %s)", pid, exec_dir)
        if isinstance(pid, int) and str(self.data_root) in _cmdline(pid):
            _terminate([pid], grace_seconds=30)
        self._kill_cgroup()
        if isinstance(exec_dir, str) and exec_dir.startswith(
            f"{EXEC_DIR_PARENT}/{EXEC_DIR_PREFIX}"
        ):
            _terminate(_pids_mentioning(exec_dir), grace_seconds=5)
            _unmount_below(Path(exec_dir))
            shutil.rmtree(exec_dir, ignore_errors=True)
        _unmount_below(self.data_root)
        self._record.unlink(missing_ok=True)

    def _kill_cgroup(self) -> None:
        """SIGKILL every process left in this engine's container cgroups (v1 and v2)."""
        for procs in _cgroup_procs(self.cgroup_parent):
            for line in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(line), signal.SIGKILL)

    def __enter__(self) -> PrivateDockerEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cgroup_procs(parent: str) -> Iterator[Path]:
    root = Path("/sys/fs/cgroup")
    for base in [root, *(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        top = base / parent
        if top.is_dir():
            yield from top.rglob("cgroup.procs")


def _unmount_below(directory: Path) -> None:
    """Detach every mount under `directory`, deepest first. dockerd 20.10 leaves its
    `exec-root/netns/default` namespace mount behind, and a killed one leaves overlays."""
    prefix = str(directory.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    # Field 5 is the mount point, with spaces and the like written as octal escapes.
    points = [
        line.split()[4].encode().decode("unicode_escape")
        for line in lines
        if line.split()[4].startswith(prefix)
    ]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
