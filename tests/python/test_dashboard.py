"""The live dashboard: every node publishes its stats into the reserved room
`system:stats` once a second; clients may read it but not write to it."""

from __future__ import annotations

import time

from harness import Client, now, run, token

SECRET = "dashboard-test-secret-of-32-bytes!!"


def test_nodes_publish_stats_once_a_second_into_a_read_only_room(start_gateway):
    gw = start_gateway("--node-id", "gw-dash")

    async def body():
        dash = await gw.connect("dash")
        await dash.request({"type": "join", "room": "system:stats"}, "joined")
        seen = []
        started = time.monotonic()
        while len(seen) < 3:
            f = await dash.recv(5)
            if f["type"] == "publish" and f["room"] == "system:stats":
                seen.append(f)
        # About one a second.
        assert 1.0 <= time.monotonic() - started <= 6.0
        data = seen[-1]["data"]
        assert data["node_id"] == "gw-dash"
        assert data["connections"] == 1
        for key in ("capacity", "rooms", "messages_in_per_s", "deliveries_per_s", "slow_consumer_closes", "uptime_s"):
            assert isinstance(data[key], (int, float)), (key, data)
        assert "id" not in seen[-1], "stats are not stored in history"
        await dash.error({"type": "message", "room": "system:stats", "content": "x", "ref": 1}, "forbidden")
        await dash.error({"type": "typing", "room": "system:stats", "is_typing": True}, "forbidden")
        status, headers, page = gw.http("GET", "/dashboard")
        assert status == 200 and b"system:stats" in page

    run(body)


def test_with_tokens_only_a_granted_identity_may_join_the_system_room(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        user = await Client.open(gw.url(f"token={token(SECRET, sub='u', exp=now() + 600)}"))
        await user.expect("welcome")
        await user.error({"type": "join", "room": "system:stats"}, "forbidden")
        ops = await Client.open(gw.url(f"token={token(SECRET, sub='ops', rooms=['system:stats'], exp=now() + 600)}"))
        await ops.expect("welcome")
        await ops.request({"type": "join", "room": "system:stats"}, "joined")

    run(body)
