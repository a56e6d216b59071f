"""Shared helpers of the hostile-input, exhaustion and log-secret tests.

- ``http_exchange``: one raw HTTP exchange over a plain socket (bytes in, the parsed
  answer out), for requests no HTTP library would send;
- ``WsAttacker`` and ``frame``: a WebSocket client over a plain asyncio stream that
  builds every frame by hand (any opcode, RSV bits, mask or none, any length field);
- ``Witness``: a steady publisher and a bystander in one room, run on their own event
  loop in a background thread so that they live across the tests of a module, with
  the exact sequence the bystander received;
- ``Report``: the markdown table attack → observed answer (``target/*.md``);
- ``rss_kib``, ``cpu_ticks``, ``settled_rss``: the gateway's memory and CPU as the
  kernel counts them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import REPO, WAIT, Gateway, raw_connect

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])
GOOD_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# --- the process, as the kernel sees it ---------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of ``pid`` in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def alive(gw: Gateway) -> bool:
    return gw.proc.poll() is None


def panics(gw: Gateway) -> list[str]:
    return [line for line in gw.logs if "panicked" in line]


async def settled_rss(pid: int, floor: int | None = None, timeout: float = 6.0) -> int:
    """The RSS once it stops shrinking (sampled every 250 ms; at most ``timeout``):
    the minimum seen, returned early when it reaches ``floor``."""
    deadline = time.monotonic() + timeout
    best = rss_kib(pid)
    while time.monotonic() < deadline:
        if floor is not None and best <= floor:
            break
        await asyncio.sleep(0.25)
        best = min(best, rss_kib(pid))
    return best


def raise_nofile() -> int:
    """Raises this process's open-file soft limit to the hard limit; the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- raw HTTP --------------------------------------------------------------------


@dataclass
class HttpAnswer:
    """What came back for a raw request: status (None: no response at all), lower-case
    headers, body, and whether the server closed the connection after it."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False
    raw: bytes = b""

    def json_code(self) -> str | None:
        try:
            return json.loads(self.body)["error"]["code"]
        except Exception:
            return None

    def describe(self) -> str:
        if self.status is None:
            return "no response, " + ("closed" if self.closed else "still open")
        out = f"{self.status}"
        code = self.json_code()
        if code:
            out += f" `{code}`"
        elif self.body:
            out += f" body {self.body[:40]!r}"
        else:
            out += " (empty body)"
        if self.closed:
            out += ", closed"
        return out


def parse_http(raw: bytes, closed: bool) -> HttpAnswer:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return HttpAnswer(None, closed=closed, raw=raw)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    body = rest
    if "content-length" in headers:
        body = rest[: int(headers["content-length"])]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        data = rest
        while data:
            size_line, _, data = data.partition(b"\r\n")
            try:
                n = int(size_line.split(b";")[0], 16)
            except ValueError:
                break  # a stream cut in the middle of a chunk header
            if n == 0:
                break
            body += data[:n]
            data = data[n + 2 :]
    return HttpAnswer(status, headers, body, closed, raw)


def addr_of(gw: Gateway) -> tuple[str, int]:
    host, port = gw.addr.rsplit(":", 1)
    return host, int(port)


async def http_exchange(
    gw: Gateway,
    request: bytes,
    *,
    then_close: bool = False,
    timeout: float = WAIT,
    body_stream: bytes = b"",
) -> HttpAnswer:
    """Sends ``request`` (raw bytes, nothing added) and reads the answer until the
    server closes the connection, or one complete response has arrived and a short
    grace passed without a close. ``then_close`` shuts our writing side right after
    sending (a client that vanishes mid-request). ``body_stream``: bytes written after
    the request by another thread, whatever the server does meanwhile (it may answer
    and close before reading them; a failed write does not lose what was received).
    Plain blocking sockets, run in a thread: unlike asyncio's transports, a socket
    whose write failed can still read what the server had sent."""
    return await asyncio.to_thread(http_exchange_sync, addr_of(gw), request, then_close, timeout, body_stream)


def http_exchange_sync(
    addr: tuple[str, int], request: bytes, then_close: bool = False, timeout: float = WAIT, body_stream: bytes = b""
) -> HttpAnswer:
    """The blocking body of :func:`http_exchange`."""
    s = socket.create_connection(addr, timeout=timeout)
    sent_all = threading.Event()

    def pump() -> None:
        try:
            s.sendall(request)
            if then_close:
                s.shutdown(socket.SHUT_WR)
            view = memoryview(body_stream)
            for i in range(0, len(view), 65536):
                s.sendall(view[i : i + 65536])
        except OSError:
            pass
        finally:
            sent_all.set()

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    raw = b""
    closed = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            answer = parse_http(raw, False)
            if answer.status is not None and _complete(answer, raw):
                # One whole response: the server closes at once when it says so
                # (`connection: close`); otherwise a short grace shows whether it does.
                if answer.headers.get("connection", "").lower() != "close":
                    left = min(left, 0.05)
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
    finally:
        s.close()
        sender.join(timeout)
    return parse_http(raw, closed)


def _complete(answer: HttpAnswer, raw: bytes) -> bool:
    head_len = raw.index(b"\r\n\r\n") + 4
    if "content-length" in answer.headers:
        return len(raw) - head_len >= int(answer.headers["content-length"])
    if answer.headers.get("transfer-encoding", "").lower() == "chunked":
        return raw.endswith(b"0\r\n\r\n")
    return answer.status in (101, 204, 304)


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"", host: bool = True) -> bytes:
    """A well-formed HTTP/1.1 request (headers as given; Content-Length when a body)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host:
        lines.append("Host: 127.0.0.1")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def upgrade_headers(key: str = GOOD_KEY, version: str = "13", **extra: str) -> dict[str, str]:
    h = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": version,
    }
    h.update(extra)
    return h


# --- hand-built WebSocket frames ---------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame as a client would send it, byte by byte. ``length`` overrides the
    length field (the payload sent is still ``payload``); lengths use the shortest
    form unless the override needs the 64-bit one."""
    first = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 65536:
        head = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + MASK + mask(payload)


def mask(payload: bytes) -> bytes:
    """XORs ``payload`` with ``MASK`` (fast for large payloads)."""
    if not payload:
        return b""
    reps = (len(payload) + 3) // 4
    key = int.from_bytes((MASK * reps)[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def text(s: str | bytes, **kw: Any) -> bytes:
    return frame(0x1, s.encode() if isinstance(s, str) else s, **kw)


def close_frame(code: int | None = 1000, reason: bytes = b"", raw_payload: bytes | None = None) -> bytes:
    if raw_payload is not None:
        return frame(0x8, raw_payload)
    if code is None:
        return frame(0x8, b"")
    return frame(0x8, code.to_bytes(2, "big") + reason)


class WsAttacker:
    """A WebSocket connection over a plain non-blocking socket: the upgrade is checked,
    every frame after it is built by hand. Plain socket calls rather than asyncio
    streams: a stream whose write fails (the server answered and reset the
    connection) discards what was received but not yet read, such as the close frame
    the server sent before the reset; a socket keeps it readable."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buf = b""
        self.senders: list[asyncio.Task] = []

    @classmethod
    async def open(cls, gw: Gateway, query: str = "user_id=attacker") -> "WsAttacker":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self = cls(sock)
        await asyncio.wait_for(self.loop.sock_connect(sock, addr_of(gw)), WAIT)
        await self.send(request("GET", f"/ws?{query}", upgrade_headers()))
        head = await self._read_until(b"\r\n\r\n", WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        op, payload = await self.read_frame()
        assert op == 0x1 and json.loads(payload)["type"] == "welcome", payload
        return self

    async def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        try:
            chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 16), left)
        except (ConnectionResetError, BrokenPipeError, OSError) as e:
            if isinstance(e, asyncio.TimeoutError):
                raise
            raise EOFError from e
        if not chunk:
            raise EOFError
        self.buf += chunk

    async def _read_exactly(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            await self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def _read_until(self, sep: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while sep not in self.buf:
            await self._fill(deadline)
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    async def send(self, data: bytes, timeout: float = WAIT) -> None:
        """Writes ``data`` (fails if the server stops reading for ``timeout``)."""
        await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), timeout)

    def send_background(self, data: bytes) -> None:
        """Writes ``data`` in the background, ignoring a failure (the server may
        answer and close before reading it all)."""

        async def pump() -> None:
            try:
                await self.loop.sock_sendall(self.sock, data)
            except OSError:
                pass

        self.senders.append(asyncio.create_task(pump()))

    async def send_json(self, obj: Any) -> None:
        await self.send(text(json.dumps(obj)))

    async def read_frame(self, timeout: float = WAIT) -> tuple[int, bytes]:
        """The next server frame; raises EOFError at the end of the stream."""
        deadline = time.monotonic() + timeout
        head = await self._read_exactly(2, deadline)
        n = head[1] & 0x7F
        assert not head[1] & 0x80, "a server frame was masked"
        if n == 126:
            n = int.from_bytes(await self._read_exactly(2, deadline), "big")
        elif n == 127:
            n = int.from_bytes(await self._read_exactly(8, deadline), "big")
        return head[0] & 0x0F, await self._read_exactly(n, deadline)

    async def read_json(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next text frame as JSON (pings skipped)."""
        while True:
            op, payload = await self.read_frame(timeout)
            if op == 0x9:
                continue
            assert op == 0x1, (op, payload)
            return json.loads(payload)

    async def until(self, kind: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """Reads frames until one of type ``kind`` whose fields match."""
        deadline = time.monotonic() + timeout
        while True:
            f = await self.read_json(max(deadline - time.monotonic(), 0.01))
            if f.get("type") == kind and all(f.get(k) == v for k, v in match.items()):
                return f

    async def join(self, room: str) -> None:
        await self.send_json({"type": "join", "room": room, "ref": "attacker-join"})
        await self.until("joined", ref="attacker-join")

    async def close_code(self, timeout: float = WAIT) -> int | str:
        """Reads up to the server's close frame and answers it; its code, or
        ``"no close frame"`` when the stream ended without one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                op, payload = await self.read_frame(max(deadline - time.monotonic(), 0.01))
            except EOFError:
                return "no close frame"
            except asyncio.TimeoutError:
                return "no close within %.0f s" % timeout
            if op == 0x8:
                try:
                    self.sock.send(close_frame(None))
                except OSError:
                    pass
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else "close without code"

    async def eof(self, timeout: float = WAIT) -> bool:
        """Whether the server ends the stream (FIN or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.buf = b""
                await self._fill(deadline)
        except EOFError:
            return True
        except asyncio.TimeoutError:
            return False

    def shutdown(self) -> None:
        """Closes our side (FIN)."""
        self.sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        for t in self.senders:
            t.cancel()
        self.sock.close()


# --- the witness: a steady publisher and a bystander -------------------------------


class Witness:
    """A publisher that sends ``pub-0``, ``pub-1``… into ``room`` every ``period``
    seconds, and a bystander in the same room that records, in arrival order, every
    message of the publisher. Runs on its own event loop in a daemon thread, so it
    lives across the tests of a module (each test runs its own loop)."""

    def __init__(self, gw: Gateway, room: str, period: float = 0.05) -> None:
        self.gw = gw
        self.room = room
        self.period = period
        self.sent: list[str] = []
        self.sent_at: dict[str, float] = {}
        self.acked: list[str] = []
        self.errors: list[dict] = []
        self.received: list[str] = []
        self.latency: list[float] = []
        #: The gateway's RSS when the campaign started (set by the test module).
        self.rss_before = 0
        self.bystander_closed: Any = None
        self.publisher_closed: Any = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._failure: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Witness":
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError(f"witness did not start: {self._failure!r}")
        if self._failure:
            raise self._failure
        return self

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:  # reported by stop()
            self._failure = e
            self._ready.set()
        finally:
            self._done.set()

    async def _main(self) -> None:
        from websockets.exceptions import ConnectionClosed

        by = await raw_connect(self.gw.url("user_id=bystander&username=Bystander"), max_queue=None)
        pub = await raw_connect(self.gw.url("user_id=publisher&username=Publisher"), max_queue=None)
        for ws, name in ((by, "by"), (pub, "pub")):
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "join", "room": self.room, "ref": name}))
            while json.loads(await ws.recv()).get("type") != "joined":
                pass

        async def read_bystander() -> None:
            try:
                async for raw in by:
                    f = json.loads(raw)
                    if f.get("type") == "message" and f.get("user_id") == "publisher":
                        self.received.append(f["content"])
                        t0 = self.sent_at.get(f["content"])
                        if t0 is not None:
                            self.latency.append(time.monotonic() - t0)
            except ConnectionClosed as e:
                self.bystander_closed = e.rcvd.code if e.rcvd else 1006
            else:
                self.bystander_closed = by.close_code

        async def read_publisher() -> None:
            try:
                async for raw in pub:
                    f = json.loads(raw)
                    if f.get("type") == "ack":
                        self.acked.append(f["ref"])
                    elif f.get("type") == "error":
                        self.errors.append(f)
            except ConnectionClosed as e:
                self.publisher_closed = e.rcvd.code if e.rcvd else 1006

        readers = [asyncio.create_task(read_bystander()), asyncio.create_task(read_publisher())]
        self._ready.set()
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            content = f"pub-{n}"
            self.sent_at[content] = time.monotonic()
            await pub.send(json.dumps({"type": "message", "room": self.room, "content": content, "ref": content}))
            self.sent.append(content)
            n += 1
            next_at += self.period
            await asyncio.sleep(max(next_at - time.monotonic(), 0))
        # Everything sent must reach the bystander (bounded wait), then both leave.
        deadline = time.monotonic() + 3 * WAIT
        while len(self.received) < len(self.sent) and time.monotonic() < deadline:
            if self.bystander_closed is not None:
                break
            await asyncio.sleep(0.05)
        for ws in (by, pub):
            try:
                await asyncio.wait_for(ws.close(), 3)
            except Exception:
                ws.transport.abort()
        for r in readers:
            r.cancel()

    def snapshot(self) -> tuple[int, int]:
        """(sent, received) so far."""
        return len(self.sent), len(self.received)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stops publishing and waits until the bystander has everything (bounded)."""
        self._stop.set()
        self._done.wait(4 * WAIT)
        if self._failure:
            raise self._failure

    def verdict(self) -> tuple[bool, str]:
        """Whether the bystander got exactly what was sent, in order; a summary."""
        ok = self.received == self.sent and not self.errors and self.acked == self.sent
        lat = sorted(self.latency)
        p = (lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] * 1000) if lat else (lambda q: float("nan"))
        summary = (
            f"sent {len(self.sent)}, acked {len(self.acked)}, received {len(self.received)} "
            f"(in order, no gap: {self.received == self.sent}), publisher errors {len(self.errors)}, "
            f"latency p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {p(1.0):.1f} ms, "
            f"bystander closed: {self.bystander_closed}"
        )
        return ok, summary


# --- the report -----------------------------------------------------------------------


class Report:
    """Rows of attack → observed answer, written to ``path`` as a markdown table after
    every row, so a run that dies half way still leaves what it saw."""

    def __init__(self, path: Path, title: str) -> None:
        self.path = path
        self.title = title
        self.rows: list[tuple[str, str, str, str, bool]] = []
        self.notes: list[str] = []

    def row(self, door: str, attack: str, expected: str, observed: Any, ok: bool) -> bool:
        self.rows.append((door, attack, expected, str(observed), bool(ok)))
        self._write()
        return bool(ok)

    def note(self, line: str) -> None:
        self.notes.append(line)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        esc = lambda s: s.replace("|", "\\|").replace("\n", " ")
        out = [f"# {self.title}", "", "| door | attack | expected | observed | ok |", "|---|---|---|---|---|"]
        for door, attack, expected, observed, ok in self.rows:
            out.append(f"| {esc(door)} | {esc(attack)} | {esc(expected)} | {esc(observed)} | {'yes' if ok else '**NO**'} |")
        if self.notes:
            out += ["", *[f"- {n}" for n in self.notes]]
        self.path.write_text("\n".join(out) + "\n")


REPORT_DIR = REPO / "target"


class Checks:
    """Collects the verdicts of one test: every row goes to the report, and the test
    fails at the end with every failed row (not only the first)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.failed: list[str] = []

    def __call__(self, door: str, attack: str, expected: str, observed: Any, ok: bool) -> None:
        if not self.report.row(door, attack, expected, observed, ok):
            self.failed.append(f"{door} {attack}: expected {expected}, observed {observed}")

    def done(self) -> None:
        assert not self.failed, "\n".join(self.failed)


# --- many raw connections ----------------------------------------------------------


async def raw_request(
    gw: Gateway,
    req: bytes,
    *,
    rcvbuf: int | None = None,
    timeout: float = WAIT,
) -> tuple[socket.socket, HttpAnswer]:
    """Opens a non-blocking socket (with ``SO_RCVBUF`` set before connecting, when
    given), sends ``req`` and reads the response head (and a JSON body when one is
    announced). The socket stays open: the caller closes it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(loop.sock_connect(sock, addr_of(gw)), timeout)
        await asyncio.wait_for(loop.sock_sendall(sock, req), timeout)
        raw = b""
        closed = False
        while True:
            answer = parse_http(raw, False)
            if answer.status is not None and (answer.status == 101 or _complete(answer, raw)):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
            except asyncio.TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
        return sock, parse_http(raw, closed)
    except BaseException:
        sock.close()
        raise


async def bounded_gather(n: int, factory, limit: int) -> list:
    """Runs ``factory(i)`` for i in 0..n with at most ``limit`` at once; results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(i: int):
        async with sem:
            return await factory(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


def metric(text_: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus/OpenMetrics text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text_.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        base, _, lab = key.partition("{")
        if base == name and (lab.rstrip("}") == want if labels else not lab):
            return float(value)
    return 0.0


async def metrics(gw: Gateway) -> str:
    status, _, body = await asyncio.to_thread(gw.http, "GET", "/metrics")
    assert status == 200, body
    return body.decode()


def kernel_send_queue(port: int) -> tuple[int, int]:
    """Bytes waiting in the kernel send queues of the established TCP connections
    whose local port is ``port`` (the gateway's side), from ``/proc/net/tcp``: the
    total and the largest."""
    total = biggest = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) != port or f[3] != "01":
            continue
        tx = int(f[4].split(":")[0], 16)
        total += tx
        biggest = max(biggest, tx)
    return total, biggest
