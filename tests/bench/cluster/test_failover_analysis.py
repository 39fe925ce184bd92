"""What the failover scenario counts, from the answers it recorded (no servers needed).

Writers charge a 5-a-second limit; probes a 1-a-day one. The numbers the report takes
from them: admitted over the limit, unchecked answers (failed open), lost charges
(checked admissions only a replica that missed writes can cause), and when limits
held again.
"""

from __future__ import annotations

from types import SimpleNamespace

from bench.cluster.failover import _analyse
from bench.cluster.load import Client, Sample

VICTIM = SimpleNamespace(announce_host="127.0.0.21", port=7000)
WRITER = Client(("127.0.0.11", 8000), "198.18.0.1", "/failover")
PROBE = Client(("127.0.0.11", 8000), "198.19.0.1", "/probe")


def writer_at_its_limit(seconds: float, client: int = 0) -> list[Sample]:
    """Two tries a refill interval (0.2 s): every other one admitted and checked."""
    samples = []
    for n in range(int(seconds / 0.1)):
        admitted = n % 2 == 0
        samples.append(Sample(n * 0.1, client, 200 if admitted else 429, True))
    return samples


def analyse(samples: list[Sample], clients: list[Client], writers: int) -> dict:
    return _analyse("cluster", samples, clients, writers, {"kill": 5.0}, VICTIM, 20.0)


def test_a_writer_kept_at_its_limit_is_never_counted_over_it() -> None:
    result = analyse(writer_at_its_limit(20.0), [WRITER], 1)
    assert result["over_limit"] == 0
    assert result["lost_charges"] == 0
    assert result["unchecked_200_after_kill"] == 0
    assert result["enforced_again_after_s"] == 0.0


def test_checked_admissions_past_the_limit_are_lost_charges() -> None:
    # A promoted replica that missed 7 of this client's charges admits 7 more, each
    # with a RateLimit header: the store counted them, from a state that was behind.
    samples = writer_at_its_limit(20.0)
    extra = [Sample(10.0 + n * 0.01, 0, 200, True) for n in range(12)]
    result = analyse(sorted(samples + extra, key=lambda s: s.t), [WRITER], 1)
    assert result["lost_charges"] == result["over_limit"] > 0
    # The writer had used 100 of the 105 its limit allows over 19.9 s: 7 are past it.
    assert result["lost_charges"] == 7


def test_unchecked_admissions_are_over_the_limit_but_not_lost_charges() -> None:
    samples = writer_at_its_limit(20.0)
    failed_open = [Sample(6.0 + n * 0.01, 0, 200, False) for n in range(50)]
    result = analyse(sorted(samples + failed_open, key=lambda s: s.t), [WRITER], 1)
    assert result["lost_charges"] == 0
    assert result["over_limit"] > 40
    assert result["unchecked_200_after_kill"] == 50
    assert 1.0 <= result["enforced_again_after_s"] <= 1.5


def test_every_probe_admission_after_its_first_is_over_the_limit() -> None:
    samples = [Sample(0.0, 0, 200, True)] + [
        Sample(0.05 * n, 0, 200 if 6.0 <= 0.05 * n < 7.0 else 429, 0.05 * n < 6.0)
        for n in range(1, 400)
    ]
    result = analyse(samples, [PROBE], 0)
    assert result["over_limit_probes"] == result["over_limit"] == 20
    assert result["enforced_again_after_s"] >= 1.9
    assert result["server_errors_5xx"] == 0


def test_server_errors_and_failed_connections_are_counted_apart() -> None:
    samples = [*writer_at_its_limit(20.0), Sample(5.5, 0, 503, False), Sample(5.6, 0, 0, False)]
    result = analyse(sorted(samples, key=lambda s: s.t), [WRITER], 1)
    assert result["server_errors_5xx"] == 1
    assert result["connection_errors"] == 1
