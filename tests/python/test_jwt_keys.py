"""Public-key tokens (issue 19, item 1): RS256/ES256 tokens checked against key files
(`--jwt-public-key`) or a JWKS (`--jwks-url`) served by a real HTTP(S) server of the
test (key_provider.py). Rotation with clients connected, the refresh on an unknown
`kid` and its rate limit, a provider that fails or is down, algorithm confusion,
`iss`/`aud`, and SSE under the same rules."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import time
import uuid

import pytest

from cryptography.hazmat.primitives import serialization

from harness import WAIT, Gateway, binary, now, poll, run, token
from key_provider import KeyProvider, SigningKey, Tls, hs256_keyed_with

SECRET = "jwt-keys-test-secret-0123456789abcdef-0123456789abcdef"


@pytest.fixture
def providers():
    """Key providers the test starts, closed at its end."""
    started: list[KeyProvider] = []

    def start(*args, **kwargs) -> KeyProvider:
        p = KeyProvider(*args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


async def handshake(gw: Gateway, tok: str, path: str = "/ws") -> tuple[int, dict]:
    """A `/ws` upgrade (or another GET) with ``tok`` in the query: the status and,
    for a refusal, the JSON body. The connection is dropped after the head."""
    host, port = gw.addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    sep = "&" if "?" in path else "?"
    writer.write(
        f"GET {path}{sep}token={tok} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    try:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)).decode()
        status = int(head.split(" ", 2)[1])
        body: dict = {}
        length = [int(line.split(":")[1]) for line in head.lower().split("\r\n") if line.startswith("content-length:")]
        if status >= 400 and length:
            body = json.loads(await asyncio.wait_for(reader.readexactly(length[0]), WAIT))
        return status, body
    finally:
        writer.close()


async def refused(gw: Gateway, tok: str) -> None:
    status, body = await handshake(gw, tok)
    assert (status, body["error"]["code"]) == (401, "unauthorized"), (status, body)


async def until(condition) -> None:
    """Waits (with the harness's deadline) until ``condition()`` holds."""

    async def check():
        return True if condition() else None

    await poll(check)


def sse_status(gw: Gateway, tok: str) -> int:
    """The status of `GET /events?rooms=s&token=…` (the stream is not read)."""
    host, port = gw.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    try:
        conn.request("GET", f"/events?rooms=s&token={tok}")
        return conn.getresponse().status
    finally:
        conn.close()


def claims(sub: str, **extra) -> dict:
    return {"sub": sub, "exp": now() + 600, **extra}


def test_rotation_keeps_sessions_and_an_unknown_kid_fetches_the_new_key(start_gateway, providers):
    key_a, key_b = SigningKey("RS256", "key-a"), SigningKey("RS256", "key-b")
    provider = providers([key_a])
    gw = start_gateway("--jwks-url", provider.url, "--jwks-min-refresh-s", "1")
    # The first fetch happens before the node announces its address.
    assert provider.fetches == 1

    async def body():
        a = await gw.open(f"token={key_a.token(**claims('alice'))}")
        assert a.welcome["user_id"] == "alice"
        await a.join_first("r")
        assert await asyncio.to_thread(sse_status, gw, key_a.token(**claims("sse-a"))) == 200

        provider.set_keys([key_b])
        # Past the least refresh interval, a token of the new key makes the handshake
        # wait for one fetch, and gets in on its first try.
        await asyncio.sleep(max(0.0, 1.2 - provider.since_last_fetch()))
        b = await gw.open(f"token={key_b.token(**claims('bob', name='Bob'))}")
        assert provider.fetches == 2
        await b.join_first("r")
        assert (await a.expect("presence"))["user"]["user_id"] == "bob"

        # Alice, whose key is gone, is still connected and served.
        await b.send({"type": "message", "room": "r", "content": "after the rotation"})
        got = await a.expect("message")
        assert (got["user_id"], got["content"]) == ("bob", "after the rotation")
        await a.ping()

        # New tokens of the removed key are refused, on /ws and on /events alike.
        await refused(gw, key_a.token(**claims("alice")))
        assert await asyncio.to_thread(sse_status, gw, key_a.token(**claims("sse-a"))) == 401
        assert await asyncio.to_thread(sse_status, gw, key_b.token(**claims("sse-b"))) == 200

    run(body)


def test_unknown_kids_cost_one_fetch_per_interval_and_failures_keep_the_cache(start_gateway, providers):
    key = SigningKey("ES256", "key-1")
    provider = providers([key])
    gw = start_gateway("--jwks-url", provider.url, "--jwks-min-refresh-s", "1")
    stranger = SigningKey("ES256", "stranger")

    async def body():
        # A flood of tokens naming made-up kids: all refused, and the provider sees
        # at most one fetch per second of it (not one per token).
        before, started = provider.fetches, time.monotonic()
        for _ in range(4):
            results = await asyncio.gather(
                *(handshake(gw, stranger.token(kid=uuid.uuid4().hex, **claims("x"))) for _ in range(50))
            )
            assert {status for status, _ in results} == {401}
        # Made-up kids do ask for a refresh (deferred to the end of the interval) ...
        await until(lambda: provider.fetches > before)
        elapsed = time.monotonic() - started
        fetched = provider.fetches - before
        # ... and 200 of them cost at most one per second (the fetches of the window,
        # plus one of slack), not one each.
        assert fetched <= int(elapsed) + 2, (fetched, elapsed)

        good = key.token(**claims("alice"))
        for mode in ["error", "garbage"]:
            provider.mode = mode
            count = provider.fetches
            await asyncio.sleep(max(0.0, 1.1 - provider.since_last_fetch()))
            # An unknown kid makes the node fetch, and the fetch fails ...
            await refused(gw, stranger.token(**claims("x")))
            await until(lambda: provider.fetches > count)
            # ... which changes nothing: the cached key still serves.
            assert (await gw.open(f"token={good}")).welcome["user_id"] == "alice"

        # The provider gone altogether: the same.
        provider.close()
        await asyncio.sleep(1.1)
        await refused(gw, stranger.token(**claims("x")))
        assert (await gw.open(f"token={good}")).welcome["user_id"] == "alice"
        assert any("JWKS fetch failed" in line for line in gw.logs), gw.log_tail()
        status, _, text = await asyncio.to_thread(gw.http, "GET", "/metrics")
        assert status == 200
        metrics = dict(line.rsplit(" ", 1) for line in text.decode().splitlines() if line and line[0] != "#")
        assert int(metrics['wsgate_jwks_fetches_total{outcome="failed"}']) >= 3, metrics
        assert int(metrics['wsgate_jwks_fetches_total{outcome="ok"}']) >= 1, metrics
        assert metrics["wsgate_jwks_keys"] == "1"

    run(body)


def test_key_files_algorithms_and_confusion(start_gateway, tmp_path):
    rsa_key, ec_key = SigningKey("RS256", "r"), SigningKey("ES256", "e")
    (tmp_path / "rsa.pem").write_bytes(rsa_key.public_pem)
    (tmp_path / "ec.pem").write_bytes(ec_key.public_pem)
    gw = start_gateway(
        "--jwt-public-key", str(tmp_path / "rsa.pem"), "--jwt-public-key", str(tmp_path / "ec.pem"),
        "--jwt-secret", SECRET, "--jwt-issuer", "https://idp.test", "--jwt-audience", "wsgate",
    )
    good = {"iss": "https://idp.test", "aud": "wsgate"}

    async def body():
        # Each kind of token, checked by its own kind of key; no kid needed for a file.
        for who, tok in [
            ("rs", rsa_key.token(kid=None, **claims("rs", **good))),
            ("es", ec_key.token(**claims("es", **good))),
            ("hs", token(SECRET, **claims("hs", **good))),
        ]:
            assert (await gw.open(f"token={tok}")).welcome["user_id"] == who
        # iss and aud hold for public-key tokens too.
        await refused(gw, rsa_key.token(**claims("x", iss="https://idp.test")))
        await refused(gw, rsa_key.token(**claims("x", iss="https://evil", aud="wsgate")))
        await refused(gw, ec_key.token(**claims("x", iss="https://idp.test", aud="other")))
        # Algorithm confusion: HS256 tokens keyed with a public key (PEM or JWK text)
        # that anyone may hold.
        for public in [rsa_key.public_pem, ec_key.public_pem, json.dumps(rsa_key.jwk).encode()]:
            await refused(gw, hs256_keyed_with(public, claims("mallory", **good)))
            await refused(gw, hs256_keyed_with(public, claims("mallory", **good), kid="r"))
        # A key this node does not have, and a signature of one key under another's alg.
        await refused(gw, SigningKey("RS256", "r").token(**claims("x", **good)))
        forged = ec_key.token(**claims("x", **good)).split(".")
        rs_header = rsa_key.token(**claims("x", **good)).split(".")[0]
        await refused(gw, ".".join([rs_header, forged[1], forged[2]]))

    run(body)

    # A key file that is no public key stops the start, naming the file.
    private = rsa_key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "private.pem").write_bytes(private)
    for bad in ["private.pem", "missing.pem"]:
        done = subprocess.run(
            [str(binary()), "--listen", "127.0.0.1:0", "--jwt-public-key", str(tmp_path / bad)],
            capture_output=True, timeout=WAIT, env={"PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 2 and f"--jwt-public-key {tmp_path / bad}" in done.stderr.decode(), done


def test_https_provider_and_a_start_while_the_provider_fails(start_gateway, providers, tmp_path, monkeypatch):
    key = SigningKey("RS256", "k")
    tls = Tls(tmp_path)
    # The gateway trusts the test CA the way OpenSSL tools do.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    secure = providers([key], tls=tls, max_age=1)
    failing = providers([key])
    failing.mode = "error"
    gw_tls = start_gateway("--jwks-url", secure.url, "--jwks-min-refresh-s", "1")
    gw_down = start_gateway("--jwks-url", failing.url, "--jwks-min-refresh-s", "1")
    tok = key.token(**claims("alice"))

    async def body():
        assert (await gw_tls.open(f"token={tok}")).welcome["user_id"] == "alice"
        # The node started although its provider failed; tokens wait for the keys.
        await refused(gw_down, tok)
        failing.mode = "ok"

        async def admitted():
            status, _ = await handshake(gw_down, tok)
            return True if status == 101 else None

        # The retry after a failure comes by itself (no token needed), and
        # `max-age=1` makes the https node refresh every second without being asked.
        await poll(admitted, timeout=WAIT)
        await until(lambda: secure.fetches >= 3)
        assert any("JWKS fetch failed" in line for line in gw_down.logs), gw_down.log_tail()

    run(body)
