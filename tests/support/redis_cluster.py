"""A real local Redis Cluster (3 primaries, 3 replicas) for the integration tiers.

Six redis-server processes on loopback ports, joined with ``redis-cli --cluster create``.
Every node gets its own client port and its own cluster-bus port (``--cluster-port``), both
picked free, so nothing depends on ``port + 10000`` happening to be free.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.crc import key_slot

from tests.support.network import free_port

HOST = "127.0.0.1"
PRIMARIES = 3
NODES = PRIMARIES * 2
SLOTS = 16384
# Small, so that nodes notice a failure (and a manual failover settles) quickly.
NODE_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``, as one node sees the cluster."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    connected: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """``CLUSTER NODES`` output, one ClusterNode per line (importing/migrating marks skipped)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        node_id, address, flags, primary_id = fields[0], fields[1], fields[2], fields[3]
        # ip:port@cport[,hostname]
        port = int(address.split("@", 1)[0].rsplit(":", 1)[1] or 0)
        slots = []
        for spec in fields[8:]:
            if spec.startswith("["):
                continue
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                node_id=node_id,
                port=port,
                flags=frozenset(flags.split(",")),
                primary_id=None if primary_id == "-" else primary_id,
                connected=fields[7] == "connected",
                slots=tuple(slots),
            )
        )
    return nodes


class RedisCluster:
    """Starts, inspects, fails over and stops a 3-primary / 3-replica Redis Cluster."""

    def __init__(self, data_dir: Path, *, password: str | None = None) -> None:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed; `make test` installs them")
        self.server_binary = server
        self.cli_binary = cli
        self.data_dir = data_dir
        self.password = password
        chosen: set[int] = set()
        while len(chosen) < NODES * 2:  # a client port and a bus port per node
            chosen.add(free_port())
        ordered = sorted(chosen)
        self.ports: list[int] = ordered[:NODES]
        self.bus_ports: list[int] = ordered[NODES:]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def startup_addr(self) -> str:
        """``host:port`` of one node (a primary right after start) to hand to a client."""
        return f"{HOST}:{self.ports[0]}"

    def start(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        try:
            for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
                self._spawn(port, bus_port)
            for port in self.ports:
                self._wait_until(
                    deadline,
                    partial(self._answers, port),
                    f"redis-server on {HOST}:{port} did not answer PING",
                )
            self._create(deadline)
            self._wait_until(deadline, self._healthy, "the cluster did not become healthy")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM every node, then SIGKILL whatever is still running at the deadline."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients and views ---------------------------------------------------------------

    def client(self) -> redis.RedisCluster:
        """A cluster-aware client bootstrapped from ``startup_addr``."""
        return redis.RedisCluster(
            host=HOST, port=self.ports[0], password=self.password, decode_responses=True
        )

    def masters(self) -> list[tuple[str, int]]:
        """The current primaries that serve slots, read live from ``CLUSTER NODES``."""
        return sorted((HOST, node.port) for node in self._view() if self._serves(node))

    def master_of_key(self, key: str) -> int:
        """The port of the primary that owns ``key``'s hash slot."""
        slot = key_slot(key.encode())
        for node in self._view():
            if self._serves(node) and node.owns(slot):
                return node.port
        raise RuntimeError(f"no primary owns slot {slot} (key {key!r})")

    def flushall(self) -> None:
        """FLUSHALL on every current primary (replicas follow)."""
        for _, port in self.masters():
            with self._node(port) as node:
                node.flushall()

    def failover(self, master_port: int, timeout: float = 20) -> int:
        """Promote ``master_port``'s replica with a graceful ``CLUSTER FAILOVER``.

        Waits until every node sees the replica as the primary, the old primary as its
        replica, and ``cluster_state:ok``; returns the new primary's port.
        """
        deadline = time.monotonic() + timeout
        view = self._view(master_port)
        by_port = {node.port: node for node in view}
        old = by_port.get(master_port)
        if old is None or not self._serves(old):
            raise RuntimeError(f"{HOST}:{master_port} is not a primary serving slots")
        replicas = [node for node in view if node.primary_id == old.node_id and not node.failing]
        if not replicas:
            raise RuntimeError(f"{HOST}:{master_port} has no healthy replica to promote")
        replica = replicas[0]
        # A graceful failover needs the replica in sync with its primary first.
        self._wait_until(
            deadline,
            lambda: self._link_up(replica.port),
            f"replica {HOST}:{replica.port} is not in sync with {HOST}:{master_port}",
        )
        # A replica gives up a manual failover it cannot finish within 5 s; ask it again then.
        sent_at: float | None = None

        def settled() -> bool:
            nonlocal sent_at
            if self._failed_over(old.node_id, replica.node_id):
                return True
            now = time.monotonic()
            if (sent_at is None or now - sent_at > 6) and not self._promoted(replica):
                with self._node(replica.port) as node:
                    node.execute_command("CLUSTER", "FAILOVER")
                sent_at = now
            return False

        self._wait_until(
            deadline,
            settled,
            f"failover of {HOST}:{master_port} to {HOST}:{replica.port} did not settle",
        )
        self._wait_until(deadline, self._healthy, "the cluster did not recover after failover")
        return replica.port

    # -- internals -----------------------------------------------------------------------

    def _node(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=port,
            password=self.password,
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def _answers(self, port: int) -> bool:
        with self._node(port) as node:
            return bool(node.ping())

    def _spawn(self, port: int, bus_port: int) -> None:
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        auth = (
            ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        )
        self.processes[port] = subprocess.Popen(
            [
                self.server_binary,
                "--port",
                str(port),
                "--bind",
                HOST,
                "--dir",
                str(node_dir),
                "--logfile",
                str(node_dir / "redis.log"),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus_port),
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # Replicas sync at once instead of after the default 5 s wait for more of them.
                "--repl-diskless-sync-delay",
                "0",
                "--appendonly",
                "no",
                "--save",
                "",
                *auth,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _create(self, deadline: float) -> None:
        env = dict(os.environ)
        if self.password:
            # As -a, without the "using a password on the command line" warning or the
            # password showing in ps.
            env["REDISCLI_AUTH"] = self.password
        result = subprocess.run(
            [
                self.cli_binary,
                "--cluster",
                "create",
                *(f"{HOST}:{port}" for port in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _wait_until(self, deadline: float, condition: Callable[[], bool], problem: str) -> None:
        while True:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            for port, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{problem}: redis-server on {HOST}:{port} exited")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{problem} in time (logs under {self.data_dir})")
            time.sleep(0.02)

    def _view(self, port: int | None = None) -> list[ClusterNode]:
        """``CLUSTER NODES`` as ``port`` (or else the first node that answers) sees it."""
        if port is not None:
            with self._node(port) as node:
                return parse_cluster_nodes(str(node.execute_command("CLUSTER", "NODES")))
        error: redis.RedisError | None = None
        for candidate in self.ports:
            try:
                return self._view(candidate)
            except redis.RedisError as exc:
                error = exc
        raise RuntimeError(f"no cluster node answered CLUSTER NODES: {error}")

    @staticmethod
    def _serves(node: ClusterNode) -> bool:
        return node.is_primary and not node.failing and bool(node.slots)

    def _cluster_info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` as raw ``name: value`` fields (no client-side parsing)."""
        with self._node(port) as node:
            raw = str(node.execute_command("CLUSTER", "INFO"))
        fields = {}
        for line in raw.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip()] = value.strip()
        return fields

    def _replication(self, port: int) -> dict[str, object]:
        with self._node(port) as node:
            return dict(node.info("replication"))

    def _link_up(self, port: int) -> bool:
        return self._replication(port).get("master_link_status") == "up"

    def _healthy(self) -> bool:
        """Every node: state ok, all slots ok, sees all six nodes with none failing;
        every replica's link to its primary is up."""
        for port in self.ports:
            cluster = self._cluster_info(port)
            if (
                cluster.get("cluster_state") != "ok"
                or cluster.get("cluster_slots_ok") != str(SLOTS)
                or cluster.get("cluster_known_nodes") != str(NODES)
                or cluster.get("cluster_size") != str(PRIMARIES)
            ):
                return False
            view = self._view(port)
            peers = [node for node in view if "myself" not in node.flags]
            if any(node.failing or not node.connected for node in peers):
                return False
            if sum(1 for node in view if self._serves(node)) != PRIMARIES:
                return False
            replication = self._replication(port)
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def _promoted(self, replica: ClusterNode) -> bool:
        """Whether ``replica`` already sees itself as a primary."""
        return any(
            node.node_id == replica.node_id and node.is_primary for node in self._view(replica.port)
        )

    def _failed_over(self, old_id: str, new_id: str) -> bool:
        """Every node sees ``new_id`` as a serving primary and ``old_id`` as its replica."""
        for port in self.ports:
            by_id = {node.node_id: node for node in self._view(port)}
            new, old = by_id.get(new_id), by_id.get(old_id)
            if new is None or old is None or not self._serves(new) or old.primary_id != new_id:
                return False
        return True
