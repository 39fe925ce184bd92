"""A Redis Cluster primary dies: the store finds the promoted replica soon after.

A real cluster of three primaries and three replicas on loopback; the primary that
serves the test's key crashes (SIGKILL: connections refused) or freezes (SIGSTOP: a host
gone without a word, every call times out), the cluster promotes its replica, and the
store must read the new slot map by itself, after its calls failed, not keep calling
the dead node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from quart_api.guards.stores import Limit, RedisCounterStore, StoreError
from quart_api.testing import HostedRedisServer, RedisReplicatedCluster

pytestmark = pytest.mark.slow

MINUTE = 60_000
KEY = "rl:{failover-client}"


@pytest.fixture
def replicated_cluster() -> Iterator[RedisReplicatedCluster]:
    with RedisReplicatedCluster(node_timeout_ms=1000) as c:
        yield c


def _owner(cluster: RedisReplicatedCluster, key: str) -> HostedRedisServer:
    """The node that a live node says serves ``key`` now."""
    slot = key_slot(key.encode())
    asked = next(n for n in cluster.nodes if n.running and not n.paused)
    with asked.client() as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"no node serves slot {slot}")


@pytest.mark.parametrize("death", ["killed", "frozen"])
async def test_the_cluster_store_finds_the_promoted_replica_soon_after_a_failover(
    replicated_cluster: RedisReplicatedCluster, death: str
) -> None:
    store = RedisCounterStore(replicated_cluster.url, timeout=0.05)
    limit = Limit(KEY, 1000, MINUTE)
    assert (await store.check([limit], [])).allowed
    dead = _owner(replicated_cluster, KEY)
    if death == "killed":
        dead.kill()
    else:
        dead.pause()
    deadline = time.monotonic() + 60
    while _owner(replicated_cluster, KEY) is dead:  # the cluster's own failover
        assert time.monotonic() < deadline, "the cluster never promoted the replica"
        await asyncio.sleep(0.1)
    # Counted from the promotion: the store must not keep calling the dead node.
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await store.check([limit], [])
            break
        except StoreError:
            assert attempts < 30, "the store did not find the promoted replica"
            await asyncio.sleep(0.1)
    assert result.allowed
    assert store._link.servers.refreshes >= 2  # type: ignore[attr-defined]
    await store.close()


async def test_a_dead_node_fails_only_the_calls_for_its_slots(
    replicated_cluster: RedisReplicatedCluster,
) -> None:
    """Batched with a call for a live node, a call for the dead one fails alone."""
    store = RedisCounterStore(replicated_cluster.url, timeout=0.2)
    alive_key = next(
        f"rl:{{other-{n}}}"
        for n in range(100)
        if _owner(replicated_cluster, f"rl:{{other-{n}}}") is not _owner(replicated_cluster, KEY)
    )
    await store.check([Limit(KEY, 10, MINUTE)], [])
    await store.check([Limit(alive_key, 10, MINUTE)], [])
    _owner(replicated_cluster, KEY).kill()
    dead, alive = await asyncio.gather(
        store.check([Limit(KEY, 10, MINUTE)], []),
        store.check([Limit(alive_key, 10, MINUTE)], []),
        return_exceptions=True,
    )
    assert isinstance(dead, StoreError)
    assert not isinstance(alive, BaseException)
    assert alive.allowed
    await store.close()
