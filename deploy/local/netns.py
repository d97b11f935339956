"""A network namespace joined to the root one by a veth pair, so one node can be partitioned.
Addresses come from 198.18.0.0/15 (RFC 2544, reserved for tests) and exist only on that pair."""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
from pathlib import Path
from types import TracebackType

from deploy.local.errors import TopologyError
from deploy.local.processes import find_binary

# Blackhole rules must be consulted before the `local` table, which decides delivery of
# packets addressed to the namespace: it moves from preference 0 (the default) to this one.
_LOCAL_TABLE_PREF = 100
_CUT_PREFS = (10, 11)
# Names carry the subnet and the pid of the run that made them, so parallel runs never
# share one, and what a killed run left behind can be recognised and removed.
_NAME = re.compile(r"^sessionlib-(\d+)-(\d+)$")


class NamespaceUnavailable(TopologyError):
    """The kernel (or missing privileges) refuses network namespaces or veth pairs."""


def _ip(*args: str) -> str:
    result = subprocess.run([find_binary("ip"), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NamespaceUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


class NetworkNamespace:
    """`198.18.<subnet>.2` inside the namespace, reached over a veth pair whose root end holds
    `.1` (the source of clients in the root namespace) and `.3` (the address the rest of the
    topology binds and sends from, so partition rules can tell its traffic from clients')."""

    def __init__(self, subnet: int, owner_pid: int | None = None) -> None:
        pid = os.getpid() if owner_pid is None else owner_pid
        self.name = f"sessionlib-{subnet}-{pid}"
        self.root_link = f"sl{subnet}-{pid}r"
        self.inside_link = f"sl{subnet}-{pid}n"
        prefix = f"198.18.{subnet}"
        self.client_address = f"{prefix}.1"
        self.inside_address = f"{prefix}.2"
        self.peer_address = f"{prefix}.3"

    @classmethod
    def create_free(cls) -> NetworkNamespace:
        """A new namespace on a subnet no address of this host uses yet; on failure nothing
        is left behind and NamespaceUnavailable says what the kernel refused."""
        remove_abandoned()
        taken = _ip("-o", "addr")
        free = [s for s in range(1, 255) if f" 198.18.{s}." not in taken]
        if not free:
            raise NamespaceUnavailable("no free 198.18.x.0/24 subnet for a test namespace")
        namespace = cls(random.choice(free))  # noqa: S311 (spreads runs, guards nothing)
        try:
            namespace.create()
        except NamespaceUnavailable:
            namespace.remove()
            raise
        return namespace

    def create(self) -> None:
        """Make the namespace and the veth pair, addressed and up."""
        _ip("netns", "add", self.name)
        veth = f"{self.root_link} type veth peer name {self.inside_link} netns {self.name}"
        _ip("link", "add", *veth.split())
        # Added first, so the root end's connected route picks it as the source of clients.
        _ip("addr", "add", f"{self.client_address}/24", "dev", self.root_link)
        _ip("addr", "add", f"{self.peer_address}/24", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        _ip("-n", self.name, "addr", "add", f"{self.inside_address}/24", "dev", self.inside_link)
        _ip("-n", self.name, "link", "set", self.inside_link, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "rule", "add", "pref", str(_LOCAL_TABLE_PREF), "lookup", "local")
        _ip("-n", self.name, "rule", "del", "pref", "0")

    def cut_off(self, address: str) -> None:
        """Drop every packet between the namespace and `address`, both ways, silently (like a
        lost link: no resets, no ICMP); other addresses, such as clients', still get through."""
        from_pref, to_pref = _CUT_PREFS
        _ip("-n", self.name, "rule", "add", "pref", str(from_pref), "from", address, "blackhole")
        _ip("-n", self.name, "rule", "add", "pref", str(to_pref), "to", address, "blackhole")

    def reconnect(self) -> None:
        """Undo `cut_off`."""
        for pref in _CUT_PREFS:
            with contextlib.suppress(NamespaceUnavailable):
                _ip("-n", self.name, "rule", "del", "pref", str(pref))

    def remove(self) -> None:
        """Delete the veth pair and the namespace, whatever of them exists."""
        with contextlib.suppress(NamespaceUnavailable):
            _ip("link", "del", self.root_link)
        with contextlib.suppress(NamespaceUnavailable):
            _ip("netns", "del", self.name)

    def __enter__(self) -> NetworkNamespace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()


def remove_abandoned() -> list[str]:
    """Remove the namespaces of runs whose process is gone (killed before its cleanup ran);
    returns their names."""
    removed = []
    for line in _ip("netns", "list").splitlines():
        match = _NAME.match(line.split(" ")[0])
        if match and not Path(f"/proc/{match[2]}").exists():
            NetworkNamespace(int(match[1]), int(match[2])).remove()
            removed.append(match[0])
    return removed
