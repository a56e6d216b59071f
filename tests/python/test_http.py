"""The plain HTTP side of one node: health, readiness, stats, refusals."""

from __future__ import annotations

import asyncio
import json

from harness import run


def test_health_ready_and_stats(start_gateway):
    gw = start_gateway("--node-id", "gw-http", "--max-connections", "50")

    async def body():
        status, _, _ = await asyncio.to_thread(gw.http, "GET", "/healthz")
        assert status == 200
        status, _, body = await asyncio.to_thread(gw.http, "GET", "/readyz")
        assert status == 200, body
        stats = await gw.stats()
        assert stats["node_id"] == "gw-http"
        assert (stats["active_connections"], stats["capacity"], stats["broker"]) == (0, 50, "memory")

        a = await gw.connect("a")
        await a.join_first("r")
        b = await gw.connect("b")
        await gw.wait_active(2)
        stats = await gw.stats()
        assert stats["utilization"] == 2 / 50
        assert isinstance(stats["uptime_s"], int)
        await b.close()
        await gw.wait_active(1)

    run(body)


def test_http_refusals(gateway):
    status, headers, body = gateway.http("GET", "/ws")
    assert status == 426
    assert headers.get("upgrade", "").lower() == "websocket"
    assert json.loads(body)["error"]["code"] == "upgrade_required"

    status, _, body = gateway.http("GET", "/no/such/path")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"

    status, _, body = gateway.http("POST", "/healthz")
    assert status == 405
    assert json.loads(body)["error"]["code"] == "method_not_allowed"

    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    status, headers, _ = gateway.http("GET", "/ws?user_id=a", {**upgrade, "Sec-WebSocket-Version": "8"})
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"

    status, _, body = gateway.http(
        "GET", "/ws?user_id=a", {**upgrade, "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"}
    )
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_handshake"

    # A development-mode user_id that is not 1-128 bytes without control characters.
    for query in ("user_id=", "user_id=a%01b", "user_id=" + "u" * 129):
        status, _, body = gateway.http("GET", f"/ws?{query}", {**upgrade, "Sec-WebSocket-Version": "13"})
        assert status == 400, (query, body)
