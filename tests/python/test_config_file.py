"""The config file (``--config``) against the real binary: a good file starts a node
that applies it; every kind of bad file (and bad flag) stops the start with exit code
2 within seconds and a message naming the file or the key."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable

import pytest

from harness import Gateway, binary, run


def write(text: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    return f.name


def start_fails(*flags: str, env: dict[str, str] | None = None) -> str:
    """Runs the binary with ``flags`` (and ``env`` added to an environment without
    ``WSGATE_*``); it must exit 2 within 5 s. Its stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    proc = subprocess.run(
        [str(binary()), "--listen", "127.0.0.1:0", *flags],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5,
        env={**clean, **(env or {})},
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "listening" not in proc.stdout
    return proc.stderr


@pytest.mark.parametrize(
    "text, named",
    [
        ("[namespaces.live]\npresense = \"count\"\n", "namespaces.live.presense"),
        ("[namespaces.live]\npresence = \"loud\"\n", "namespaces.live.presence"),
        ("[namespaces.live]\nhistory_len = 0\n", "namespaces.live.history_len"),
        ("[namespaces.live]\nhistory_len = 1000001\n", "namespaces.live.history_len"),
        ("[namespaces.live]\npresence_max_members = 0\n", "namespaces.live.presence_max_members"),
        ("[namespaces.live]\nhistory_ttl = 0\n", "namespaces.live.history_ttl"),
        ("[namespaces.live]\nhistory_ttl = \"soon\"\n", "namespaces.live.history_ttl"),
        ("[namespaces.live]\nmax_members = 0\n", "namespaces.live.max_members"),
        ("[namespaces.live]\nclient_publish = \"no\"\n", "namespaces.live.client_publish"),
        ("[namespaces.\"bad name\"]\n", "namespaces.bad name"),
        ("[namespaces.\"a:b\"]\n", "namespaces.a:b"),
        ("[namespaces.private]\nprivate = false\n", "namespaces.private.private"),
        ("namespaces.live = 3\n", "namespaces.live"),
        ("[namespaces.live\npresence = \"full\"\n", "line 1"),
        ("rooms = 3\n", "rooms"),
    ],
)
def test_a_bad_file_stops_the_start_naming_the_key(text: str, named: str) -> None:
    path = write(text)
    err = start_fails("--config", path)
    assert path in err and named in err, err


def test_a_missing_file_and_bad_flags_stop_the_start() -> None:
    err = start_fails("--config", "/nonexistent/wsgate.toml")
    assert "/nonexistent/wsgate.toml" in err, err
    # WSGATE_CONFIG is the flag's fallback.
    path = write("[namespaces.live]\nbogus = 1\n")
    err = start_fails(env={"WSGATE_CONFIG": path})
    assert path in err and "namespaces.live.bogus" in err, err
    assert "--presence-max-members" in start_fails("--presence-max-members", "0")
    assert "--max-members" in start_fails("--max-members", "0")
    assert "--presence-grace-ms" in start_fails("--presence-grace-ms", "3600001")
    assert "--history-ttl-s" in start_fails("--history-ttl-s", "0")
    assert "--accept-rate" in start_fails("--accept-rate", "4000000000")
    assert "--reconnect-window-ms" in start_fails("--reconnect-window-ms", "600001")
    assert "--reconnect-url" in start_fails("--reconnect-url", "http://not-ws")
    # clap refuses a mode it does not know (exit 2 as well).
    assert "loud" in start_fails("--presence", "loud")


async def say(c, room: str, text: str) -> None:
    """Sends a message and reads its ack and its own copy (in either order)."""
    await c.send({"type": "message", "room": room, "content": text, "ref": text})
    assert sorted(f["type"] for f in await c.recv_n(2)) == ["ack", "message"]


def test_a_good_file_is_applied(start_gateway: Callable[..., Gateway]) -> None:
    path = write("[namespaces.feed]\npresence = \"off\"\nhistory_len = 2\n")
    gw = start_gateway("--config", path, "--history-len", "5")
    status, _, _ = gw.http("GET", "/readyz")
    assert status == 200, gw.log_tail()

    async def body() -> None:
        c = await gw.connect("u")
        joined = await c.request({"type": "join", "room": "feed:a"}, "joined")
        assert joined["presence"] == "off"
        for i in range(4):
            await say(c, "feed:a", f"m{i}")
        page = await c.request({"type": "history", "room": "feed:a"}, "history")
        assert [m["content"] for m in page["messages"]] == ["m2", "m3"], "history_len = 2 in feed"
        await c.request({"type": "join", "room": "lobby"}, "joined")
        await c.expect("presence")
        for i in range(4):
            await say(c, "lobby", f"m{i}")
        page = await c.request({"type": "history", "room": "lobby"}, "history")
        assert len(page["messages"]) == 4, "the default namespace keeps --history-len 5"

    run(body)
