"""The client's IP address, for limits counted per address.

``REMOTE_ADDR`` is the peer that connected to us. Behind reverse proxies that is the
proxy, so a deployment says how many proxies of its own stand in front
(``TRUSTED_PROXY_COUNT``) and the address is read from ``X-Forwarded-For`` that many
hops from the right: entries further left were written by the client and prove nothing.
With 0 (the default) the header is ignored entirely, so a client cannot pick the
address its limits are counted under.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings


def client_ip(request: Any) -> str:
    """The address limits are counted under; IPv6 clients by their /64 network."""
    meta = getattr(request, "META", {})
    address = meta.get("REMOTE_ADDR", "") or ""
    hops = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if hops > 0:
        forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    return _bucket(address)


def _bucket(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        # One subscriber usually gets a whole /64; counting single addresses in it
        # would hand each client 2**64 budgets.
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False).network_address) + "/64"
    return str(parsed)


def is_loopback(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_loopback
