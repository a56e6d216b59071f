"""A throw-away Redis with Sentinel for the end-to-end tests: one master, one replica
and three sentinels (quorum 2, a master is down after 1 s) on free loopback ports, no
persistence. Every process is stopped by its PID; its files live in a temporary
directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from backend_harness import free_port
from redis_procs import RedisProcs

MASTER_NAME = "wsgate-master"


class RedisSentinel(RedisProcs):
    def __init__(self) -> None:
        super().__init__("wsgate-redis-sentinel-")
        self.data_ports: list[int] = []
        self.sentinel_ports: list[int] = []
        try:
            master = free_port()
            self._data(master)
            replica = free_port()
            self._data(replica, master)
            self._until(lambda: "master_link_status:up" in self.cli(replica, "INFO", "replication"),
                        "the replica to sync")
            for _ in range(3):
                port = free_port()
                conf = Path(self.dir.name) / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\nprotected-mode no\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                )
                self.procs[port] = subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"], cwd=self.dir.name,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                self.sentinel_ports.append(port)
            for port in self.sentinel_ports:
                self._until(lambda port=port: self.master_port(port) == master, "a sentinel to see the master")
            # Every sentinel knows the replica and the other sentinels before any test
            # kills the master.
            self._until(lambda: all(
                self.cli(p, "SENTINEL", "REPLICAS", MASTER_NAME).count("ip") >= 1
                and int(self._field(self.cli(p, "SENTINEL", "MASTER", MASTER_NAME), "num-other-sentinels") or 0) >= 2
                for p in self.sentinel_ports), "the sentinels to know each other and the replica")
        except BaseException:
            self.cleanup()
            raise

    def _data(self, port: int, master: int | None = None) -> None:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--protected-mode", "no"]
        if master is not None:
            args += ["--replicaof", "127.0.0.1", str(master)]
        self.procs[port] = subprocess.Popen(args, cwd=self.dir.name, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if port not in self.data_ports:
            self.data_ports.append(port)
        self._until(lambda: self.cli(port, "PING") == "PONG", "a redis node to answer")

    @staticmethod
    def _field(reply: str, name: str) -> str | None:
        lines = reply.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line == name:
                return lines[i + 1]
        return None

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.sentinel_ports]

    def master_port(self, sentinel: int | None = None) -> int | None:
        """The master's port as a sentinel names it."""
        reply = self.cli(sentinel or self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        parts = reply.split()
        return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else None

    def restart_as_replica(self, port: int, master: int) -> None:
        """Starts a killed data node again, empty, replicating ``master``."""
        self._data(port, master)
