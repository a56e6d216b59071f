"""What the throw-away Redis deployments of the tests share (a Redis Cluster in
``redis_cluster.py``, Sentinel in ``redis_sentinel.py``): processes kept by port and
stopped by PID, ``redis-cli`` against one of them, bounded waits, files in a temporary
directory."""

from __future__ import annotations

import subprocess
import tempfile
import time
from typing import Callable


class RedisProcs:
    def __init__(self, prefix: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix=prefix)
        self.procs: dict[int, subprocess.Popen] = {}

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def _until(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def running(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def calls(self, command: str, ports: list[int] | None = None) -> int:
        """Calls of ``command`` (e.g. ``spublish``) over the running nodes (or ``ports``)."""
        total = 0
        for p in ports if ports is not None else self.running():
            for line in self.cli(p, "INFO", "commandstats").splitlines():
                if line.startswith(f"cmdstat_{command}:calls="):
                    total += int(line.split("=", 1)[1].split(",", 1)[0])
        return total

    def kill9(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.dir.cleanup()
