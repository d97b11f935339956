"""The judgements `sessionlib doctor` makes from what cluster nodes say, on views written
out by hand: states a real cluster passes through too briefly to catch in a test."""

from sessionlib.cluster_views import ClusterView, view_from_nodes
from sessionlib.doctor import Report, _check_agreement, _check_slots

A, B, C = "a" * 40, "b" * 40, "c" * 40


def nodes(epoch_b: int = 2, b_owns: str = "5461-16383", b_flags: str = "master") -> str:
    return (
        f"{A} 127.0.0.1:7001@17001 master - 0 0 1 connected 0-5460\n"
        f"{B} 127.0.0.1:7002@17002 {b_flags} - 0 0 {epoch_b} connected {b_owns}\n"
        f"{C} 127.0.0.1:7004@17004 slave {B} 0 0 2 connected\n"
    )


def seen_by(address: str, text: str) -> ClusterView:
    """`text` as the node at `address` answers it: its own line flagged `myself`."""
    lines = [
        line.replace(" master", " myself,master", 1).replace(" slave ", " myself,slave ", 1)
        if f" {address}@" in line
        else line
        for line in text.splitlines()
    ]
    return view_from_nodes(address, "cluster_state:ok\n", "\n".join(lines))


def test_nodes_that_see_different_owners_or_epochs_are_a_problem_naming_both_sides():
    report = Report()
    views = [
        seen_by("127.0.0.1:7001", nodes()),
        seen_by("127.0.0.1:7002", nodes()),
        seen_by("127.0.0.1:7004", nodes(epoch_b=1, b_owns="5461-10000")),
    ]

    _check_agreement(views, report)

    [(status, text)] = report.findings
    assert status == "FAIL"
    assert text.startswith("nodes disagree on the slot map: 127.0.0.1:7001, 127.0.0.1:7002 see")
    assert (
        "127.0.0.1:7004 see 127.0.0.1:7001 (epoch 1) slots 0-5460, 127.0.0.1:7002 (epoch 1)" in text
    )


def test_a_master_only_some_nodes_suspect_is_reported_as_not_yet_agreed():
    report = Report()
    views = [
        seen_by("127.0.0.1:7001", nodes(b_flags="master,fail?")),
        seen_by("127.0.0.1:7004", nodes()),
    ]

    up = _check_slots(views, views[1], report)

    assert [node.address for node in up] == ["127.0.0.1:7001"]
    [(status, text)] = report.findings
    assert status == "FAIL"
    assert (
        "master 127.0.0.1:7002 (slots 5461-16383) is flagged fail? (not yet agreed) by 1 of 2"
        in text
    )
    assert "its replica (127.0.0.1:7004)" in text
