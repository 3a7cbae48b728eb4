"""Which IP addresses a URL chosen by a stranger may make us connect to.

The fetcher may only reach *public unicast* addresses. Python's ``ipaddress.is_global``
is not used on purpose: its answers changed between patch releases (IPv4-mapped and
special IPv6 blocks), and it knows nothing of the IPv4-in-IPv6 wrappings that would
smuggle ``127.0.0.1`` past a naive check. Instead the rules are explicit tables taken
from the IANA special-purpose registries, and IPv6 is allowed only inside the global
unicast block 2000::/3 (everything else there is unallocated or special), with the
wrappings unwrapped and their embedded IPv4 checked like any other IPv4.

Host spellings are handled here too: ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and
``127.1`` are all ``127.0.0.1`` to the C library and to browsers (WHATWG URL's IPv4
parser), so they are parsed the same way and never passed to DNS.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

PUBLIC = "public"

# Categories that FETCH_ALLOW_PRIVATE_ADDRESSES may reach during local development:
# unicast addresses that exist on a developer's machine or network. Multicast,
# unspecified, broadcast and reserved space stay refused even then.
PRIVATE_USE_CATEGORIES: frozenset[str] = frozenset(
    {"loopback", "private", "link-local", "shared (CGNAT)", "unique-local", "site-local"}
)

# Order matters only where blocks nest; the first match names the category.
_IPV4_SPECIAL: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), category)
    for net, category in (
        ("0.0.0.0/8", "this-network"),  # 0.0.0.0 reaches the local host on Linux
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),  # cloud metadata lives at 169.254.169.254
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # the deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_IPV6_SPECIAL: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), category)
    for net, category in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("100::/64", "discard-only"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("2001::/23", "IETF protocol assignment"),  # checked after Teredo's 2001::/32
        ("5f00::/16", "reserved"),  # SRv6 segment identifiers
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = IPv6Network("64:ff9b:1::/48")
_TEREDO = IPv6Network("2001::/32")
_SIX_TO_FOUR = IPv6Network("2002::/16")

_DECIMAL = re.compile(r"[0-9]+")
_OCTAL = re.compile(r"0[0-7]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")


def _ipv4_number(part: str) -> int | None:
    """One dotted part as inet_aton reads it: 0x.. hex, 0.. octal, else decimal."""
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if _OCTAL.fullmatch(part) else None
    if _DECIMAL.fullmatch(part):
        return int(part)
    return None


def parse_ipv4_spelling(host: str) -> IPv4Address | None:
    """The IPv4 address a host spells in any inet_aton/WHATWG form, or None for a name.

    Raises ValueError for a host that ends in a number but is not a valid address
    (``999.1.1.1``, ``1.2.3.4.5``, ``example.08``): browsers refuse those rather than
    look them up, and so do we; a resolver must never be asked to interpret them.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # one trailing dot names the same host
    last = parts[-1]
    if not last or not (_DECIMAL.fullmatch(last) or _HEX.fullmatch(last)):
        return None  # an ordinary DNS name
    if len(parts) > 4:
        raise ValueError(f"{host!r} has too many parts for an IPv4 address")
    numbers = [_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    leading, final = numbers[:-1], numbers[-1]
    if any(number > 255 for number in leading):  # type: ignore[operator]
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    if final >= 256 ** (5 - len(numbers)):  # type: ignore[operator]
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    value = final
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))  # type: ignore[operator]
    return IPv4Address(value)


def parse_host_address(host: str) -> IPAddress | None:
    """The address an already IDNA-normalised URL host names literally, or None for a name.

    IPv6 comes without brackets. Zone identifiers (``fe80::1%eth0``) are refused: they
    only mean something on one machine. Raises ValueError for malformed literals.
    """
    if ":" in host:
        if "%" in host:
            raise ValueError("IPv6 zone identifiers are not allowed")
        return IPv6Address(host)
    return parse_ipv4_spelling(host)


def embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """IPv4 addresses that an IPv6 address wraps and would route traffic to."""
    if address in _IPV4_MAPPED:
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _IPV4_TRANSLATED or address in _NAT64_WELL_KNOWN:
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _NAT64_LOCAL_USE:
        # RFC 8215 lets the operator pick the prefix length; the /96 form is the common
        # one. The block is refused as a whole anyway (see classify).
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _SIX_TO_FOUR:
        return [IPv4Address((int(address) >> 80) & 0xFFFFFFFF)]
    if address in _TEREDO:
        server = IPv4Address((int(address) >> 64) & 0xFFFFFFFF)
        client = IPv4Address(~int(address) & 0xFFFFFFFF)  # stored inverted (RFC 4380)
        return [server, client]
    return []


def _classify_ipv4(address: IPv4Address) -> str:
    for network, category in _IPV4_SPECIAL:
        if address in network:
            return category
    return PUBLIC


def classify(address: IPAddress) -> str:
    """``"public"`` for a public unicast address, otherwise why it is not one.

    For IPv4 wrapped in IPv6 the embedded address decides: ``::ffff:127.0.0.1`` is
    ``"loopback"``. Wrappings that cannot carry traffic to the public internet are
    refused even around a public IPv4 (IPv4-compatible, IPv4-translated and local-use
    NAT64 are deprecated or private to one network).
    """
    if isinstance(address, IPv4Address):
        return _classify_ipv4(address)
    if address.scope_id:
        return "link-local"
    if address == IPv6Address("::"):
        return "unspecified"
    if address == IPv6Address("::1"):
        return "loopback"
    for inner in embedded_ipv4(address):
        category = _classify_ipv4(inner)
        if category != PUBLIC:
            return category
    if address in _IPV4_MAPPED or address in _NAT64_WELL_KNOWN:
        return PUBLIC
    if address in _IPV4_COMPATIBLE or address in _IPV4_TRANSLATED:
        return "reserved"
    if address in _NAT64_LOCAL_USE:
        return "local-use NAT64"
    if address in _TEREDO or address in _SIX_TO_FOUR:
        return PUBLIC
    for network, category in _IPV6_SPECIAL:
        if address in network:
            return category
    if address not in _IPV6_GLOBAL_UNICAST:
        return "reserved"
    return PUBLIC


def is_public_unicast(address: IPAddress | str) -> bool:
    """True only for addresses on the public internet that name one host."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    return classify(address) == PUBLIC


def connect_address(address: IPAddress) -> str:
    """The string to hand to connect(): IPv4-mapped IPv6 is dialled as plain IPv4.

    An AF_INET6 socket with IPV6_V6ONLY cannot reach a mapped address, and dialling the
    IPv4 form keeps what we connect to identical to what was checked.
    """
    if isinstance(address, IPv6Address) and address in _IPV4_MAPPED:
        return str(IPv4Address(int(address) & 0xFFFFFFFF))
    return str(address)
