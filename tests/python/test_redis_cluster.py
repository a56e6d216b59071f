"""Cluster mode on a real Redis Cluster (3 masters + 3 replicas, started by the
test) with three gateways: what the suite proves on one Redis holds on it (delivery
across nodes, history, exact recovery, presence, direct and per-user publishes,
broadcast), fan-out goes over sharded Pub/Sub only (``SPUBLISH``, never ``PUBLISH``),
and a master killed with ``kill -9`` under steady publishing loses nothing: every
acknowledged message reaches every subscriber once, in order, and every refused one
was answered ``unavailable``."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Callable

import pytest

from backend_harness import api, key_flags, publish_broadcast, publish_user, run_backend, say
from failover import publish_through_failover
from harness import Gateway, poll
from redis_cluster import RedisCluster
from test_gap_repair import metric

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture
def redis_cluster():
    c = RedisCluster(masters=3, replicas=1)
    try:
        yield c
    finally:
        c.cleanup()


def gateways(redis_cluster: RedisCluster, start_gateway: Callable[..., Gateway], *flags: str) -> list[Gateway]:
    """Three gateways on the cluster, once each says it is ready."""
    seeds = ",".join(redis_cluster.seeds)
    nodes = [start_gateway("--redis-cluster-nodes", seeds, "--node-id", f"n{i}", *key_flags(), *flags)
             for i in (1, 2, 3)]

    async def ready():
        for gw in nodes:
            async def up(gw=gw):
                status, _, body = await asyncio.to_thread(gw.http, "GET", "/readyz")
                return True if status == 200 and json.loads(body)["broker"] == "redis" else None

            await poll(up, timeout=30)

    run_backend(ready)
    return nodes


def test_the_cluster_behaves_like_one_redis_over_sharded_pubsub(redis_cluster, start_gateway):
    n1, n2, n3 = gateways(redis_cluster, start_gateway)

    async def body():
        alice, bob, carol = await n1.connect("alice"), await n2.connect("bob"), await n3.connect("carol")
        await alice.join_first("lobby")
        jb = await bob.join_first("lobby")
        assert jb["members_count"] == 2
        seen = await alice.expect("presence")
        assert (seen["event"], seen["user"]["user_id"], seen["count"]) == ("join", "bob", 2)

        first = await say(alice, "lobby", "hello", "r1")
        assert await bob.expect("message") == first

        # Direct and per-user frames cross nodes (carol is in no room).
        await alice.request({"type": "direct", "to": "carol", "content": "psst", "ref": "d"}, "ack")
        assert (await carol.expect("direct"))["content"] == "psst"
        await publish_user(n1, "carol", {"n": 1})
        assert (await carol.expect("publish"))["data"] == {"n": 1}

        # Exact recovery on another node: bob leaves, two messages, bob back on n3.
        await bob.close()
        assert (await alice.expect("presence"))["event"] == "leave"
        missed = [await say(alice, "lobby", f"m{i}", f"m{i}") for i in range(2)]
        bob2 = await n3.connect("bob")
        await bob2.send({"type": "join", "room": "lobby", "since": first["id"], "epoch": jb["epoch"], "ref": "rj"})
        replayed, joined = await bob2.recv_until("joined")
        assert replayed == missed and joined["recovered"] is True, (replayed, joined)
        assert (await bob2.expect("presence"))["user"]["user_id"] == "bob"
        assert (await alice.expect("presence"))["event"] == "join"

        # History, from a third node.
        h = await carol.request({"type": "history", "room": "lobby", "limit": 10}, "history")
        assert [m["content"] for m in h["messages"]] == ["hello", "m0", "m1"], h

        # A broadcast reaches every node (over the broadcast channels of several shards).
        for gw in (n1, n2, n3):
            await publish_broadcast(gw, f"from {gw.url()}")
            for c in (alice, bob2, carol):
                assert (await c.expect("broadcast"))["data"] == f"from {gw.url()}"

    run_backend(body)
    assert redis_cluster.calls("spublish") > 0
    assert redis_cluster.calls("publish") == 0, "classic Pub/Sub goes through every shard"
    assert redis_cluster.calls("ssubscribe") > 0 and redis_cluster.calls("subscribe") == 0


def test_a_master_killed_under_publishing_loses_no_acknowledged_message(redis_cluster, start_gateway):
    # Acknowledged only once a replica holds it: the failover cannot lose it.
    n1, n2, n3 = gateways(redis_cluster, start_gateway, "--redis-wait-replicas", "1")
    room = "failover"
    master = redis_cluster.master_of("{" + room + "}")

    def failed_over() -> bool:
        try:
            return redis_cluster.master_of("{" + room + "}") != master
        except AssertionError:
            return False

    async def body():
        pub = await n1.connect("pub")
        subs = [await n2.connect("s2"), await n3.connect("s3"), await n1.connect("s1")]
        await publish_through_failover(
            pub, subs, room,
            kill=lambda: redis_cluster.kill9(master),
            failed_over=failed_over,
            # Back only once its replica took over (an empty master coming back first
            # would keep its slots, empty: a loss that Redis itself makes).
            restart=lambda: redis_cluster.restart(master),
        )
        # A keyed API publish waits for the replica too, and its retry through another
        # node is the first answer. n2 has not written to the room's slot since the
        # failover: its first call may meet the old owner (MOVED: 503, nothing stored,
        # the slot map refreshed), so it retries with the same key, as a back end does.
        body = {"room": room, "data": {"x": 1}, "idempotency_key": "k1"}

        async def published():
            a = await api(n2, "POST", "/api/publish", body)
            assert a.status in (200, 503), a.body
            return a if a.status == 200 else None

        first = await poll(published, timeout=15, every=0.2)
        again = await api(n3, "POST", "/api/publish", body)
        assert again.status == 200, again.body
        assert again.body["id"] == first.body["id"] and again.body.get("replayed") is True, again.body

    run_backend(body, timeout=180)


def test_a_room_whose_slot_moves_to_another_shard_keeps_every_message(start_gateway):
    # Resharding under publishing: Redis unsubscribes the room's channel on the old
    # owner (SUNSUBSCRIBE), a publish may meet MOVED/ASK (answered unavailable); the
    # node resubscribes on the new owner and refills the room from its stream there.
    cluster = RedisCluster(masters=3, replicas=0)
    try:
        n1, n2 = gateways(cluster, start_gateway)[:2]
        room = "moving"
        source = cluster.master_of("{" + room + "}")
        target = next(p for p in cluster.masters() if p != source)
        moved = False

        async def body():
            nonlocal moved
            pub = await n1.connect("pub")
            subs = [await n2.connect("s2"), await n1.connect("s1")]

            def move() -> None:
                nonlocal moved
                cluster.move_slot_of("{" + room + "}", target)
                moved = True

            await publish_through_failover(
                pub, subs, room,
                kill=move,
                failed_over=lambda: True,
                restart=lambda: None,
                require_refusal=False,
            )

        run_backend(body, timeout=120)
        assert moved and cluster.master_of("{" + room + "}") == target
        # Both nodes held the room's channel on the old owner: Redis took it away
        # (SUNSUBSCRIBE), and each node treated that as a gap and refilled the room.
        for gw in (n1, n2):
            assert metric(gw, "broker_disconnects") >= 1
            assert metric(gw, "gap_refills") >= 1
    finally:
        cluster.cleanup()

