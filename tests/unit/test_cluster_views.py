"""How `sessionlib doctor` reads a Redis Cluster node's own account of the cluster: CLUSTER
NODES lines as Redis 7 writes them, and CLUSTER SHARDS for a user who may run only that."""

from sessionlib.cluster_views import (
    ClusterNodeLine,
    as_ranges,
    format_ranges,
    view_from_nodes,
    view_from_shards,
)

MASTER_A = "a" * 40
MASTER_B = "b" * 40
REPLICA = "c" * 40
NODES = (
    f"{MASTER_A} 127.0.0.1:7001@17001,node-a myself,master - 0 0 1 connected 0-5460 "
    f"[5->-{MASTER_B}]\n"
    f"{MASTER_B} 127.0.0.1:7002@17002 master,fail - 0 0 2 disconnected 5461-16382 16383\n"
    f"{REPLICA} 127.0.0.1:7004@17004 slave {MASTER_A} 0 0 1 connected\n"
)


def test_a_nodes_line_gives_address_flags_epoch_slots_and_the_slot_left_migrating():
    line = ClusterNodeLine.parse(NODES.splitlines()[0])

    assert line.address == "127.0.0.1:7001"
    assert line.flags == {"myself", "master"}
    assert (line.config_epoch, line.master_id) == (1, None)
    assert line.slots == ((0, 5460),)
    assert line.open_slots == (f"[5->-{MASTER_B}]",)


def test_a_view_knows_itself_the_masters_in_slot_order_and_who_is_down():
    view = view_from_nodes("127.0.0.1:7001", "cluster_state:fail\r\ncluster_size:2\r\n", NODES)

    assert view.info["cluster_state"] == "fail"
    assert view.myself is not None and view.myself.node_id == MASTER_A
    assert [node.address for node in view.serving_masters()] == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert view.node(MASTER_B) is not None and view.node(MASTER_B).is_down
    assert view.node(REPLICA) is not None and view.node(REPLICA).master_id == MASTER_A


def test_two_views_that_differ_only_in_config_epochs_agree_when_epochs_are_not_compared():
    ours = view_from_nodes("127.0.0.1:7001", "", NODES)
    theirs = view_from_nodes("127.0.0.1:7004", "", NODES.replace(" 0 0 2 ", " 0 0 7 "))

    assert ours.slot_map() != theirs.slot_map()
    assert ours.slot_map(epochs=False) == theirs.slot_map(epochs=False)


def test_shards_in_resp2_bytes_give_owners_replicas_and_failed_health():
    def shard(first: int, last: int, *members: list[object]) -> list[object]:
        return [b"slots", [first, last], b"nodes", list(members)]

    def member(node_id: str, port: int, role: bytes, health: bytes) -> list[object]:
        fields = [b"id", node_id.encode(), b"tls-port", port, b"ip", b"127.0.0.1"]
        return [*fields, b"endpoint", b"127.0.0.1", b"role", role, b"health", health]

    reply = [
        shard(
            0,
            16383,
            member(MASTER_A, 7001, b"master", b"online"),
            member(REPLICA, 7004, b"replica", b"fail"),
        ),
    ]

    view = view_from_shards("127.0.0.1:7004", reply)

    assert view.partial and view.info == {}
    assert view.myself is not None and view.myself.address == "127.0.0.1:7004"
    [master] = view.serving_masters()
    assert master.slots == ((0, 16383),)
    replica = view.node(REPLICA)
    assert replica is not None and replica.is_down and replica.master_id == MASTER_A


def test_slots_become_the_fewest_ranges_and_read_back_as_text():
    ranges = as_ranges([199, 100, *range(101, 199), 6000])

    assert ranges == [(100, 199), (6000, 6000)]
    assert format_ranges(ranges) == "100-199, 6000"
    assert format_ranges([]) == "none"
