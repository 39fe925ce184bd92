"""Real Redis for tests: a standalone server, a Redis Cluster, and a Sentinel group.

    with RedisServer() as server:              # redis://127.0.0.1:<port>/0
        ...
    with RedisClusterServer() as cluster:      # redis+cluster://h1:p1,h2:p2,h3:p3
        ...
    with RedisSentinelGroup() as group:        # redis+sentinel://s1:p1,.../<master name>
        ...

Every URL is in the form the guards' ``REDIS_URL`` takes. Servers run without
persistence; ``flush()`` empties them between tests.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, ClassVar, Self

import redis

from quart_api.testing._process import HOST, Server, ServerError, find_binary, free_port

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "RedisClusterServer",
    "RedisSentinelGroup",
    "RedisServer",
    "SentinelServer",
]

#: A Redis Cluster node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000


def _short_client(host: str, port: int) -> redis.Redis:
    return redis.Redis(host, port, socket_timeout=2, socket_connect_timeout=2)


class RedisServer(Server):
    """redis-server without persistence.

    ``cluster=True`` makes it a bare cluster node (see `RedisClusterServer`);
    ``replica_of`` is the ``(host, port)`` of a primary to replicate.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = HOST,
        cluster: bool = False,
        replica_of: tuple[str, int] | None = None,
    ) -> None:
        self.cluster = cluster
        self.replica_of = replica_of
        super().__init__(port, host=host)

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A short-timeout sync client for set-up work (not for the code under test)."""
        return _short_client(self.host, self.port)

    def flush(self) -> None:
        """Delete every key (FLUSHALL)."""
        with self.client() as client:
            client.flushall()

    def info(self, section: str) -> dict[str, Any]:
        """``INFO section`` of this server."""
        with self.client() as client:
            info: dict[str, Any] = client.info(section)
            return info

    def _pick_port(self) -> int:
        if self.cluster:
            return free_port(
                hosts=(self.host,), below=65_536 - CLUSTER_BUS_OFFSET, also_free=CLUSTER_BUS_OFFSET
            )
        return free_port(hosts=(self.host,))

    def _command(self) -> list[str]:
        command = [
            find_binary("redis-server", "redis-server"),
            "--port", str(self.port),
            "--bind", self.host,
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.cluster:
            # nodes.conf lives in the temp dir, so a restarted node rejoins as itself.
            # A 2 s node timeout (default 15 s) bounds how long a new or restarted
            # cluster takes to report ok again (the rejoin delay is the node timeout,
            # clearing a FAIL flag takes twice it): ~2 s instead of up to 30 s.
            command += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-announce-ip", self.host,
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", self.replica_of[0], str(self.replica_of[1])]
        return command

    def _is_ready(self, pid: int) -> bool:
        try:
            return bool(self.info("server")["process_id"] == pid)
        except redis.RedisError:
            return False


class RedisClusterServer:
    """A Redis Cluster of `size` masters (no replicas) on loopback, each a `RedisServer`.

    Built with CLUSTER ADDSLOTS / SET-CONFIG-EPOCH / MEET (no redis-cli needed), and
    `start()` returns only once every node reports cluster_state:ok. `stop()`,
    `pause()` and friends act on every node; fault tests that want one node down use
    `nodes[i]` and then `ensure_running()` (which waits for the cluster to be ok again).
    `port` and `pid` are the first node's.

    With no replicas and a 2 s node timeout, a node paused or stopped for more than
    about 2 s is marked FAIL and the other nodes answer CLUSTERDOWN until it is back;
    a restarted node itself reports ok only ~2 s after it starts (Redis's rejoin delay).
    """

    SLOTS: ClassVar[int] = 16_384

    def __init__(self, size: int = 3, *, host: str = HOST, ready_timeout: float = 30.0) -> None:
        self.host = host
        self.nodes = [RedisServer(host=host, cluster=True) for _ in range(size)]
        self.ready_timeout = ready_timeout

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid

    @property
    def url(self) -> str:
        """``redis+cluster://h1:p1,h2:p2,...``, the form `REDIS_URL` takes for a cluster."""
        return "redis+cluster://" + ",".join(f"{self.host}:{port}" for port in self.ports)

    def start(self) -> Self:
        """Start every node, form the cluster if new, and wait for cluster_state:ok."""
        for node in self.nodes:
            node.start()
        if self._info(self.nodes[0])["cluster_slots_assigned"] == "0":
            self._create()
        self.wait_ok()
        return self

    def _create(self) -> None:
        size = len(self.nodes)
        bounds = [i * self.SLOTS // size for i in range(size + 1)]
        for i, node in enumerate(self.nodes):
            with node.client() as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
                # Distinct epochs, as redis-cli gives them; only allowed before MEET.
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", node.host, node.port)

    @staticmethod
    def _info(node: RedisServer) -> dict[str, str]:
        """CLUSTER INFO of one node, values as strings."""
        with node.client() as client:
            info: dict[str, str] = client.cluster("info")
            return info

    def states(self) -> list[str]:
        """Each node's cluster_state ("ok", "fail", or "down" if it does not answer)."""
        states = []
        for node in self.nodes:
            try:
                states.append(self._info(node)["cluster_state"])
            except redis.RedisError:
                states.append("down")
        return states

    def wait_ok(self) -> None:
        """Block until every node reports cluster_state:ok."""
        deadline = time.monotonic() + self.ready_timeout
        while (states := self.states()) != ["ok"] * len(self.nodes):
            if time.monotonic() > deadline:
                tails = "\n".join(f"{node!r}:\n{node.log_tail(lines=5)}" for node in self.nodes)
                raise ServerError(
                    f"cluster not ok after {self.ready_timeout} s: states {states}\n{tails}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restart(self) -> None:
        """Restart every node on its port with its nodes.conf; waits for cluster_state:ok."""
        self.stop()
        self.start()

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    def ensure_running(self) -> None:
        """Resume or restart any node left down, then wait for cluster_state:ok."""
        for node in self.nodes:
            node.ensure_running()
        self.wait_ok()

    def flush(self) -> None:
        """FLUSHALL on every node (each holds only its own slots' keys)."""
        for node in self.nodes:
            node.flush()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisClusterServer({self.url})"


class SentinelServer(Server):
    """A Redis Sentinel (``redis-server sentinel.conf --sentinel``).

    It monitors the primary at ``primary`` as ``master_name`` and judges it down after
    ``down_after_ms``. Sentinel rewrites its config file as it learns, so a restart
    keeps what it knew.
    """

    name = "sentinel"

    def __init__(
        self,
        *,
        master_name: str,
        primary: tuple[str, int],
        quorum: int = 2,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 10_000,
        host: str = HOST,
        port: int | None = None,
    ) -> None:
        self.master_name = master_name
        self.primary = primary
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        super().__init__(port, host=host)

    def _config_lines(self) -> list[str]:
        name = self.master_name
        return [
            f"port {self.port}",
            f"bind {self.host}",
            "protected-mode no",
            "daemonize no",
            f"dir {self.dir}",
            'logfile ""',
            "sentinel resolve-hostnames no",
            f"sentinel monitor {name} {self.primary[0]} {self.primary[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]

    def _prepare(self) -> None:
        (self.dir / "sentinel.conf").write_text("\n".join(self._config_lines()) + "\n")

    def _command(self) -> list[str]:
        return [
            find_binary("redis-server", "redis-server"),
            str(self.dir / "sentinel.conf"),
            "--sentinel",
        ]

    def client(self) -> redis.Redis:
        """A short-timeout sync client of this sentinel."""
        return _short_client(self.host, self.port)

    def master(self) -> dict[str, Any]:
        """What this sentinel knows of the primary (``SENTINEL MASTER name``)."""
        with self.client() as client:
            state: dict[str, Any] = client.sentinel_master(self.master_name)
            return state

    def _is_ready(self, pid: int) -> bool:
        try:
            with self.client() as client:
                return bool(client.info("server")["process_id"] == pid)
        except redis.RedisError:
            return False


class RedisSentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels watching them.

    The first Redis server starts as the primary; the sentinels monitor it as
    ``master_name`` with a majority quorum. `start()` returns once every sentinel sees
    the primary, its replicas and the other sentinels (a failover needs all of that),
    and every replica has synced with the primary. `url` is the
    ``redis+sentinel://s1:p1,s2:p2,s3:p3/<master name>`` form.

    Subclasses place the servers elsewhere by overriding `_make_redis` and
    `_make_sentinel`.
    """

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        master_name: str = "mymaster",
        down_after_ms: int = 2000,
        ready_timeout: float = 60.0,
    ) -> None:
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.ready_timeout = ready_timeout
        primary = self._make_redis(0, None)
        self.redis = [primary] + [
            self._make_redis(i, primary.announced) for i in range(1, replicas + 1)
        ]
        quorum = sentinels // 2 + 1
        self.sentinels = [
            self._make_sentinel(i, primary.announced, quorum) for i in range(sentinels)
        ]

    def _make_redis(self, index: int, replica_of: tuple[str, int] | None) -> RedisServer:
        """Redis server ``index`` (0: the first primary), replicating ``replica_of``."""
        return RedisServer(replica_of=replica_of)

    def _make_sentinel(self, index: int, primary: tuple[str, int], quorum: int) -> SentinelServer:
        """Sentinel ``index``, monitoring ``primary``."""
        return SentinelServer(
            master_name=self.master_name,
            primary=primary,
            quorum=quorum,
            down_after_ms=self.down_after_ms,
        )

    @property
    def url(self) -> str:
        """``redis+sentinel://s1:p1,s2:p2,.../<master name>``."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.master_name}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.announced for s in self.sentinels]

    def start(self) -> Self:
        for server in [*self.redis, *self.sentinels]:
            server.start()
        self.wait_ready()
        return self

    def primary(self) -> RedisServer:
        """The server the sentinels name as primary now."""
        address = self.sentinels[0].master()
        for server in self.redis:
            if server.announced == (address["ip"], int(address["port"])):
                return server
        raise ServerError(f"sentinels name {address['ip']}:{address['port']}, not ours")

    def _linked(self) -> bool:
        """Every running replica's link to the primary is up (its first sync is done)."""
        for server in self.redis:
            if server.running:
                info = server.info("replication")
                if info.get("role") != "master" and info.get("master_link_status") != "up":
                    return False
        return True

    def wait_ready(self) -> None:
        """Every running sentinel sees the primary up, every replica, and the others;
        every running replica has synced with the primary."""
        deadline = time.monotonic() + self.ready_timeout
        want_replicas = len(self.redis) - 1
        want_sentinels = len(self.sentinels) - 1
        while True:
            try:
                states = [s.master() for s in self.sentinels if s.running]
                ok = all(
                    int(m["num-slaves"]) >= want_replicas
                    and int(m["num-other-sentinels"]) >= want_sentinels
                    and not (m["is_sdown"] or m["is_odown"])
                    for m in states
                )
                if ok and len({(m["ip"], m["port"]) for m in states}) == 1 and self._linked():
                    return
            except (redis.RedisError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"sentinel group not ready after {self.ready_timeout} s")
            time.sleep(0.1)

    def ensure_running(self) -> None:
        """Resume or restart every server left down, then wait until the group is ready."""
        for server in [*self.redis, *self.sentinels]:
            server.ensure_running()
        self.wait_ready()

    def flush(self) -> None:
        """FLUSHALL on the primary (the replicas follow)."""
        self.primary().flush()

    def close(self) -> None:
        for server in [*self.sentinels, *self.redis]:
            server.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
