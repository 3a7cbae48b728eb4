"""Fails any test that tries to reach beyond loopback.

Tests of URL fetching must prove the fetcher refuses private and public addresses
without ever connecting to them. The guard wraps socket connect/sendto and name
resolution; a forbidden attempt raises and is also recorded, so code under test that
swallows the exception still fails the test at teardown.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

violations: list[str] = []

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto
_real_getaddrinfo = socket.getaddrinfo

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "testserver"}


class NetworkGuardError(RuntimeError):
    """Not an OSError on purpose: fetch code must not mistake it for 'host unreachable'."""


def is_loopback_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets, netlink: local by definition
    host = address[0] if isinstance(address, tuple) else address
    if not is_loopback_host(host):
        message = f"test tried to connect to non-loopback address {address!r}"
        violations.append(message)
        raise NetworkGuardError(message)


def _connect(self: socket.socket, address: Any) -> Any:
    _check_address(self, address)
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> Any:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def _sendto(self: socket.socket, data: Any, *args: Any) -> Any:
    address = args[-1]
    _check_address(self, address)
    return _real_sendto(self, data, *args)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not is_loopback_host(host):
        try:
            ipaddress.ip_address(str(host).strip("[]").split("%")[0])
        except ValueError:
            message = f"test tried to resolve {host!r} through real DNS"
            violations.append(message)
            raise NetworkGuardError(message) from None
    return _real_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _sendto  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo
