"""Free ports for tests and benchmarks: picked from a range that parallel workers split."""

from __future__ import annotations

import os

import pytest

from deploy.local.processes import (
    FREE_PORT_RANGE,
    FREE_PORT_RANGE_VARIABLE,
    find_free_ports,
    free_port_range,
)


def test_ports_come_from_the_slice_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FREE_PORT_RANGE_VARIABLE, "21000-21010")
    ports = find_free_ports(5)
    assert len(set(ports)) == 5
    assert all(21000 <= port < 21010 for port in ports)


def test_without_a_slice_the_whole_range_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FREE_PORT_RANGE_VARIABLE, raising=False)
    assert free_port_range() == FREE_PORT_RANGE


def test_a_malformed_slice_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FREE_PORT_RANGE_VARIABLE, "lots")
    with pytest.raises(ValueError, match="SESSIONLIB_FREE_PORT_RANGE must be 'start-end'"):
        free_port_range()


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="only under pytest-xdist")
def test_each_parallel_worker_has_a_slice_of_its_own() -> None:
    width = len(FREE_PORT_RANGE) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    index = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    start = FREE_PORT_RANGE.start + index * width
    assert free_port_range() == range(start, start + width)
