"""A real Redis Cluster for tests: N masters (each with an optional replica) on loopback ports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.redis_proc import RedisProc, free_port

SLOTS = 16384


@dataclass
class ClusterProc:
    """``masters`` nodes sharing the 16384 slots, plus one replica per master when ``replicas``."""

    directory: Path
    masters: int = 3
    replicas: bool = True
    nodes: list[RedisProc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 30.0) -> ClusterProc:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # no orphan nodes when the cluster fails to form
            raise

    def _start(self, timeout: float) -> ClusterProc:
        count = self.masters * (2 if self.replicas else 1)
        for i in range(count):
            node = RedisProc(self.directory / f"n{i}", aof=True, port=_cluster_port())
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            self.nodes.append(node.start())
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]
        first = clients[0]
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        per = SLOTS // self.masters
        for i in range(self.masters):
            end = SLOTS if i == self.masters - 1 else (i + 1) * per
            clients[i].execute_command("CLUSTER ADDSLOTS", *range(i * per, end))
        self._wait(lambda: all(int(c.cluster("INFO")["cluster_known_nodes"]) == count for c in clients), timeout)
        for i in range(self.masters, count):
            master_id = clients[i - self.masters].execute_command("CLUSTER MYID")
            clients[i].execute_command("CLUSTER REPLICATE", master_id)
        self._wait(lambda: all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients), timeout)
        if self.replicas:
            self._wait(lambda: all(_replica_in_sync(c) for c in clients[self.masters :]), timeout)
        for c in clients:
            c.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_of(self, key: str) -> RedisProc:
        """The master currently serving ``key``'s slot."""
        with redis.Redis(port=self.nodes[0].port, decode_responses=True) as c:
            slot = int(c.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(key)

    def replica_of(self, master: RedisProc) -> RedisProc:
        for node in self.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as c:
                info = c.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    return node
        raise LookupError(master.port)

    @staticmethod
    def _wait(ready: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("cluster did not become ready")
            time.sleep(0.05)  # polling external processes, bounded by the deadline


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid too."""
    while True:
        port = free_port()
        if port + 10_000 <= 65_535:
            return port


def _replica_in_sync(client: redis.Redis) -> bool:
    info = client.info("replication")
    return bool(info["role"] == "slave" and info["master_link_status"] == "up")
