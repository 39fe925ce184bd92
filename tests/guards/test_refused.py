"""The memory of refused clients that holds back their early cache lookups."""

from __future__ import annotations

from quart_api.guards._refused import RefusedClients
from tests.guards.conftest import FakeClock


def test_a_refused_client_is_remembered_until_its_retry_after_passes() -> None:
    clock = FakeClock()
    refused = RefusedClients(clock=clock)
    refused.refuse(["i:1.2.3.4", "u:alice"], 2.0)
    assert refused.refused("i:1.2.3.4")
    assert refused.refused("u:alice")
    assert not refused.refused("i:1.2.3.5")
    clock.advance(2.0)
    assert not refused.refused("i:1.2.3.4")
    assert len(refused) == 1, "an expired refusal is forgotten when read"


def test_a_later_refusal_extends_the_remembered_one() -> None:
    clock = FakeClock()
    refused = RefusedClients(clock=clock)
    refused.refuse(["i:1.2.3.4"], 1.0)
    clock.advance(0.5)
    refused.refuse(["i:1.2.3.4"], 1.0)
    clock.advance(0.9)
    assert refused.refused("i:1.2.3.4")


def test_a_shorter_refusal_never_cuts_a_longer_one_short() -> None:
    clock = FakeClock()
    refused = RefusedClients(clock=clock)
    refused.refuse(["i:1.2.3.4"], 3600.0)  # a ban
    refused.refuse(["i:1.2.3.4"], 1.0)  # then a rate limit
    clock.advance(10.0)
    assert refused.refused("i:1.2.3.4")


def test_many_refused_clients_never_grow_the_memory_past_its_bound() -> None:
    refused = RefusedClients(max_clients=100, clock=FakeClock())
    for n in range(1_000):
        refused.refuse([f"i:10.0.{n // 256}.{n % 256}", f"u:user{n}"], 60.0)
        assert len(refused) <= 100
    assert refused.refused("i:10.0.3.231"), "the latest refusal is kept whole"
    assert refused.refused("u:user999")
    refused.clear()
    assert not refused


def test_a_forgotten_client_is_no_longer_refused() -> None:
    refused = RefusedClients(clock=FakeClock())
    refused.refuse(["i:1.2.3.4"], 60.0)
    refused.forget("i:1.2.3.4")
    refused.forget("i:9.9.9.9")  # never refused: nothing happens
    assert not refused.refused("i:1.2.3.4")
