"""``GET /metrics``: Prometheus exposition, correct under several workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (one empty directory shared by the
workers of a host, emptied before they start), every worker writes its
counters to files there and any worker answering ``/metrics`` aggregates them
all; without it, the process's own registry is exposed. Only addresses in
``METRICS_ALLOW`` (addresses or networks; loopback by default) may read it:
others get a 404, as if the route did not exist. The client's address is the
guards' own (``quart_api.guards.client_address``): every ``X-Forwarded-For``
line, through ``TRUSTED_PROXY_COUNT`` proxies only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from quart import Blueprint, Response, current_app
from quart_schema import hide
from werkzeug.exceptions import NotFound

from quart_api.guards import client_address
from quart_api.settings import Settings

__all__ = ["blueprint", "parse_allow_list"]

blueprint = Blueprint("metrics", __name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_list(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks; ``*`` allows everyone (behind your own firewall)."""
    networks: list[Network] = []
    for entry in entries:
        if entry == "*":
            return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
        networks.append(ipaddress.ip_network(entry, strict=False))
    return tuple(networks)


def _allowed(networks: tuple[Network, ...]) -> bool:
    address = client_address()
    return address is not None and any(address in network for network in networks)


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    """The guards' counters (cache, limits, bans, store errors, breakers) and process stats."""
    settings: Settings = current_app.extensions["settings"]
    networks: tuple[Network, ...] = current_app.extensions["metrics_allow"]
    if not _allowed(networks):
        raise NotFound()
    if settings.prometheus_multiproc_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
