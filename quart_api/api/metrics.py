"""``GET /metrics``: Prometheus exposition, correct under several workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (one empty directory shared by the
workers of a host, emptied before they start), every worker writes its
counters to files there and any worker answering ``/metrics`` aggregates them
all; without it, the process's own registry is exposed. Only addresses in
``METRICS_ALLOW`` (addresses or networks; loopback by default) may read it:
others get a 404, as if the route did not exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from quart import Blueprint, Response, current_app, request
from quart_schema import hide
from werkzeug.exceptions import NotFound

from quart_api.guards._identity import client_address
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


def _allowed(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    """The guards' counters (cache, limits, bans, store errors, breakers) and process stats."""
    settings: Settings = current_app.extensions["settings"]
    networks: tuple[Network, ...] = current_app.extensions["metrics_allow"]
    address = client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"), settings.trusted_proxy_count
    )
    if not _allowed(address, networks):
        raise NotFound()
    if settings.prometheus_multiproc_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
