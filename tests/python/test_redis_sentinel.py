"""Cluster mode on Redis with Sentinel (one master, one replica, three sentinels,
started by the test): two gateways find the master through Sentinel, and when it is
killed with ``kill -9`` under steady publishing they follow the failover: every
acknowledged message reaches every subscriber once, in order, and every refused one
was answered ``unavailable`` (publishes during the failover are refused, never
accepted and lost)."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Callable

import pytest

from backend_harness import key_flags, run_backend
from failover import publish_through_failover
from harness import Gateway, poll
from redis_sentinel import MASTER_NAME, RedisSentinel

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture
def sentinel():
    s = RedisSentinel()
    try:
        yield s
    finally:
        s.cleanup()


def test_a_sentinel_failover_under_publishing_loses_no_acknowledged_message(sentinel, start_gateway):
    flags = ("--redis-sentinels", ",".join(sentinel.sentinels), "--redis-master-name", MASTER_NAME,
             "--redis-wait-replicas", "1", *key_flags())
    n1, n2 = (start_gateway(*flags, "--node-id", f"n{i}") for i in (1, 2))

    async def ready():
        for gw in (n1, n2):
            async def up(gw=gw):
                status, _, body = await asyncio.to_thread(gw.http, "GET", "/readyz")
                return True if status == 200 and json.loads(body)["broker"] == "redis" else None

            await poll(up, timeout=30)

    run_backend(ready)
    master = sentinel.master_port()
    assert master is not None

    async def body():
        pub = await n1.connect("pub")
        subs = [await n2.connect("s2"), await n1.connect("s1")]
        await publish_through_failover(
            pub, subs, "room",
            kill=lambda: sentinel.kill9(master),
            failed_over=lambda: sentinel.master_port() not in (None, master),
            restart=lambda: sentinel.restart_as_replica(master, sentinel.master_port()),
        )

    run_backend(body, timeout=180)
