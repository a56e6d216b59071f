"""Secrets and logs (issue 9, part 5): a gateway with `--jwt-secret` and `--api-key`
serves tokens (query and header), the API key (both headers), chat messages, a
direct message, a publish, a notification and an SSE stream with a token in its
query, and the failure paths too (an invalid, an expired and a garbage token, a
wrong API key, bad frames carrying a marker); then it is stopped and every byte it
wrote on stdout and stderr is searched: no secret, no token (nor its signature), no
message content may appear. docs/operations.md: "tokens and message contents are
never logged".
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest

import hostile as h
from harness import WAIT, binary, now, raw_connect, run


class LoggedGateway:
    """A gateway whose stdout and stderr go to files, read whole after it stops."""

    def __init__(self, tmp: Path, flags: list[str], level: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
        env["WSGATE_LOG"] = level
        self.out_path, self.err_path = tmp / "stdout.log", tmp / "stderr.log"
        self.out, self.err = open(self.out_path, "wb"), open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary()), "--listen", "127.0.0.1:0", *flags],
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=self.err,
            env=env,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        self.addr = ""
        while not self.addr:
            for line in self.out_path.read_text(errors="replace").splitlines():
                if line.startswith("wsgate listening on "):
                    self.addr = line.split()[-1]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"wsgate did not start: {self.err_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)

    def url(self, path: str) -> str:
        return f"http://{self.addr}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.out.close()
        self.err.close()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")


REPORT = h.Report(h.REPORT_DIR / "log-secrets-report.md", "Secrets in logs: what a run that used them left in its output")


@pytest.mark.parametrize(
    "log_format,level",
    [
        ("pretty", "info"),
        ("json", "info"),
        ("json", "debug"),
        # docs/operations.md says "never logged", whatever the level.
        ("json", "trace"),
    ],
    ids=["pretty-info", "json-info", "json-debug", "json-trace"],
)
def test_no_secret_token_or_content_in_logs(tmp_path, log_format, level):
    tag = secrets.token_hex(6)
    secret = f"jwt-secret-{tag}-{secrets.token_hex(8)}"
    api_key = f"api-key-{tag}-{secrets.token_hex(8)}"
    marker = f"MARKER{tag}"
    valid = {
        # The token's own claims are not secret (user ids are logged by design), but
        # the token is: a bearer credential.
        "alice": jwt.encode({"sub": "alice", "name": "Alice", "exp": now() + 600}, secret, algorithm="HS256"),
        "bob": jwt.encode({"sub": "bob", "exp": now() + 600}, secret, algorithm="HS256"),
        "sse": jwt.encode({"sub": "carol", "exp": now() + 600}, secret, algorithm="HS256"),
    }
    invalid = {
        "wrong signature": jwt.encode({"sub": "mallory", "exp": now() + 600, "x": marker}, "not-the-secret-" + secrets.token_hex(16), algorithm="HS256"),
        "expired": jwt.encode({"sub": "mallory", "exp": now() - 600}, secret, algorithm="HS256"),
        "garbage": f"garbage-token-{marker}",
    }
    wrong_key = f"wrong-api-key-{marker}"
    contents = {
        "message": f"{marker}-room-message",
        "direct": f"{marker}-direct-message",
        "publish": f"{marker}-published-data",
        "notification title": f"{marker}-notification-title",
        "notification body": f"{marker}-notification-body",
        "bad frame": f"{marker}-inside-a-bad-frame",
        "too long": f"{marker}-too-long",
    }
    gw = LoggedGateway(tmp_path, ["--jwt-secret", secret, "--api-key", api_key, "--log-format", log_format], level)
    try:

        async def body():
            ws = lambda q, **kw: raw_connect(f"ws://{gw.addr}/ws{q}", **kw)
            alice = await ws(f"?token={valid['alice']}")
            bob = await ws("", additional_headers={"Authorization": f"Bearer {valid['bob']}"})
            for c in (alice, bob):
                assert json.loads(await c.recv())["type"] == "welcome"
            await alice.send(json.dumps({"type": "join", "room": "lobby", "ref": 1}))
            while json.loads(await alice.recv()).get("type") != "joined":
                pass
            await alice.send(json.dumps({"type": "message", "room": "lobby", "content": contents["message"], "ref": 2}))
            await bob.send(json.dumps({"type": "direct", "to": "alice", "content": contents["direct"], "ref": 3}))
            await alice.send("{" + contents["bad frame"])  # bad_json
            await alice.send(json.dumps({"type": "message", "room": "nope", "content": contents["too long"] + "x" * 65536}))
            await alice.send(json.dumps({"type": "history", "room": "lobby", "ref": 4}))
            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
                r = await http.post(gw.url("/api/publish"), headers={"Authorization": f"Bearer {api_key}"}, json={"room": "lobby", "data": {"v": contents["publish"]}})
                assert r.status_code == 200, r.text
                r = await http.post(
                    gw.url("/api/notifications"),
                    headers={"X-Api-Key": api_key},
                    json={"user_id": "alice", "title": contents["notification title"], "body": contents["notification body"]},
                )
                assert r.status_code == 200, r.text
                r = await http.get(gw.url("/api/users/alice/notifications"), headers={"X-Api-Key": api_key})
                assert r.status_code == 200
                for headers in ({"Authorization": f"Bearer {wrong_key}"}, {"X-Api-Key": wrong_key}):
                    r = await http.post(gw.url("/api/publish"), headers=headers, json={"room": "lobby", "data": contents["publish"]})
                    assert r.status_code == 401
                # SSE with the token in the query: read its opening, then leave.
                async with http.stream("GET", gw.url(f"/events?rooms=lobby&token={valid['sse']}")) as r:
                    assert r.status_code == 200
                    async for chunk in r.aiter_text():
                        if "id:" in chunk:
                            break
                for what, tok in invalid.items():
                    r = await http.get(gw.url(f"/events?rooms=lobby&token={tok}"))
                    assert r.status_code == 401, (what, r.status_code)
            for what, tok in invalid.items():
                for kw in ({"q": f"?token={tok}"}, {"q": "", "additional_headers": {"Authorization": f"Bearer {tok}"}}):
                    q = kw.pop("q")
                    try:
                        c = await ws(q, **kw)
                        await c.close()
                        raise AssertionError(f"{what} token accepted")
                    except AssertionError:
                        raise
                    except Exception:
                        pass  # refused with 401
            # Both sessions saw their frames (so every path above really ran).
            got = set()
            deadline = time.monotonic() + WAIT
            while {"message", "direct", "publish", "notification"} - got and time.monotonic() < deadline:
                f = json.loads(await asyncio.wait_for(alice.recv(), WAIT))
                got.add(f["type"])
            assert {"message", "direct", "publish", "notification"} <= got, got
            # A client that vanishes mid-session (the abnormal-close path).
            alice.transport.abort()
            await bob.close()

        run(body)
    finally:
        gw.stop()
    output = gw.output()
    assert "wsgate listening on" in output
    needles = {
        "the JWT secret": secret,
        "the API key": api_key,
        "the wrong API key": wrong_key,
        **{f"{who}'s token": tok for who, tok in valid.items()},
        **{f"{who}'s token signature": tok.rsplit(".", 1)[1] for who, tok in valid.items()},
        **{f"the {what} token": tok for what, tok in invalid.items()},
        "the marker (any content)": marker,
        "the secret's random part": secret.rsplit("-", 1)[1],
        "the API key's random part": api_key.rsplit("-", 1)[1],
    }
    check = h.Checks(REPORT)
    config = f"--log-format {log_format}, WSGATE_LOG={level}"
    lines = output.splitlines()
    for name, needle in needles.items():
        hits = [line for line in lines if needle in line]
        check(config, name, "absent from stdout and stderr", f"{len(hits)} line(s)" + (f": {hits[0][:300]}" if hits else ""), not hits)
    REPORT.note(f"{config}: {len(lines)} log lines searched")
    check.done()
