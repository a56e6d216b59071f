"""A throw-away Redis Cluster for the end-to-end tests: ``masters`` masters with
``replicas`` replicas each on free loopback ports, made with ``redis-cli --cluster
create``, no persistence, a 1 s node timeout (a failover takes a few seconds). Every
node is stopped by its PID; its files live in a temporary directory."""

from __future__ import annotations

import subprocess

import random
import socket

from redis_procs import RedisProcs

SLOTS = 16384


def cluster_port() -> int:
    """A free port P whose cluster bus port, P + 10000, is free too (an ephemeral
    port plus 10000 may be past 65535): drawn from 20000-29999."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def crc16(data: bytes) -> int:
    """CRC16/XMODEM, Redis Cluster's key hash."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    """The slot of ``key`` by the hash-tag rule."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc16(key.encode()) % SLOTS


class RedisCluster(RedisProcs):
    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        super().__init__("wsgate-redis-cluster-")
        try:
            for _ in range(masters * (1 + replicas)):
                self._spawn(cluster_port())
            for port in self.procs:
                self._until(lambda port=port: self.cli(port, "PING") == "PONG", "a node to answer")
            out = subprocess.run(
                ["redis-cli", "--cluster", "create", *self.seeds,
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=60,
            )
            assert out.returncode == 0, out.stdout + out.stderr
            self.wait_ok()
        except BaseException:
            self.cleanup()
            raise

    def _spawn(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no",
             "--protected-mode", "no"],
            cwd=self.dir.name, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def restart(self, port: int) -> None:
        """Starts a killed node again on its port with its cluster config: it rejoins
        (as a replica, once its slots were failed over) and syncs from its master."""
        self._spawn(port)
        self._until(lambda: self.cli(port, "PING") == "PONG", "the node to answer")

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.procs]

    def wait_ok(self, timeout: float = 30) -> None:
        """Every running node says the cluster is ok with every slot served, and every
        replica has finished syncing from its master."""
        def ok() -> bool:
            for p in self.running():
                info = self.cli(p, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
                repl = self.cli(p, "INFO", "replication")
                if "role:slave" in repl and ("master_link_status:up" not in repl
                                             or "master_sync_in_progress:0" not in repl):
                    return False
            return True
        self._until(ok, "the cluster to be ok", timeout)

    def master_of(self, key: str) -> int:
        """The port of the running master that serves ``key``'s slot now."""
        slot = key_slot(key)
        for p in self.running():
            for line in self.cli(p, "CLUSTER", "NODES").splitlines():
                parts = line.split()
                if "myself" not in parts[2] or "master" not in parts[2]:
                    continue
                for r in parts[8:]:
                    a, _, b = r.partition("-")
                    if a.isdigit() and int(a) <= slot <= int(b or a):
                        return p
        raise AssertionError(f"no master serves slot {slot}")

    def node_id(self, port: int) -> str:
        return self.cli(port, "CLUSTER", "MYID")

    def move_slot_of(self, key: str, to: int) -> None:
        """Migrates ``key``'s slot, with its keys, to the master on port ``to``, the way
        ``redis-cli --cluster reshard`` does it for one slot: IMPORTING / MIGRATING,
        ``MIGRATE`` of every key, then ``SETSLOT … NODE`` on every master."""
        slot = str(key_slot(key))
        source = self.master_of(key)
        src_id, dst_id = self.node_id(source), self.node_id(to)
        assert self.cli(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id) == "OK"
        assert self.cli(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id) == "OK"
        while True:
            keys = self.cli(source, "CLUSTER", "GETKEYSINSLOT", slot, "100").split()
            if not keys:
                break
            out = self.cli(source, "MIGRATE", "127.0.0.1", str(to), "", "0", "5000", "KEYS", *keys)
            assert out in ("OK", "NOKEY"), out
        for port in self.masters():
            self.cli(port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self._until(lambda: self.master_of(key) == to, "the slot to move")

    def masters(self) -> list[int]:
        return [p for p in self.running() if self.cli(p, "ROLE").startswith("master")]

