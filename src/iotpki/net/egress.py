"""Where the server may connect on someone else's behalf: ACME challenge validation and
webhook deliveries.

Loopback, private (RFC 1918), shared (CGNAT, RFC 6598), link-local (cloud metadata at
169.254.169.254 included), unique-local, site-local, multicast, unspecified, documentation
and reserved addresses are refused, also when carried inside an IPv4-mapped, 6to4 or NAT64
address, unless the operator allows named networks (setting ``egress_allow``, e.g.
``["127.0.0.0/8"]`` for a test setup or ``["10.20.0.0/16"]`` for a private fleet).

A name is resolved once and every address it resolves to is vetted; callers connect to a
vetted address (sending the name as Host header and SNI), never through a second lookup, so
a name cannot be re-bound to an internal address between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from iotpki.errors import ConfigError, PolicyViolation

__all__ = [
    "BLOCKED",
    "AsyncResolver",
    "EgressPolicy",
    "Resolver",
    "resolve",
    "resolve_async",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""Resolves a host name and port to address strings (``socket.getaddrinfo`` by default)."""
AsyncResolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""The same, for the serving loop."""


def _networks(*entries: tuple[str, str]) -> tuple[tuple[str, IPNetwork], ...]:
    return tuple((why, ipaddress.ip_network(net)) for why, net in entries)


# IANA special-purpose registries (RFC 6890 and its updates): nothing a validation or a
# webhook has any business reaching by default.
BLOCKED = _networks(
    ("unspecified", "0.0.0.0/8"),
    ("private", "10.0.0.0/8"),
    ("shared (CGNAT)", "100.64.0.0/10"),
    ("loopback", "127.0.0.0/8"),
    ("link-local", "169.254.0.0/16"),
    ("private", "172.16.0.0/12"),
    ("IETF protocol assignments", "192.0.0.0/24"),
    ("documentation", "192.0.2.0/24"),
    ("private", "192.168.0.0/16"),
    ("benchmarking", "198.18.0.0/15"),
    ("documentation", "198.51.100.0/24"),
    ("documentation", "203.0.113.0/24"),
    ("multicast", "224.0.0.0/4"),
    ("reserved", "240.0.0.0/4"),
    ("unspecified", "::/128"),
    ("loopback", "::1/128"),
    ("IPv4-compatible", "::/96"),
    ("discard", "100::/64"),
    ("IETF protocol assignments", "2001::/23"),
    ("documentation", "2001:db8::/32"),
    ("unique-local", "fc00::/7"),
    ("link-local", "fe80::/10"),
    ("site-local", "fec0::/10"),
    ("multicast", "ff00::/8"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_LOCALHOST = ipaddress.ip_address("127.0.0.1")


def _embedded(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The networks outbound connections may reach besides the public Internet."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_text(cls, entries: Iterable[str]) -> EgressPolicy:
        """Build from ``egress_allow`` entries (addresses or networks, e.g. ``10.0.0.0/8``)."""
        allow: list[IPNetwork] = []
        for entry in entries:
            try:
                allow.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError as exc:
                raise ConfigError(f"egress_allow: not a network: {entry[:64]!r}") from exc
        return cls(tuple(allow))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (a special-purpose range's name), or None."""
        embedded = _embedded(address)
        candidates = [address] if embedded is None else [address, embedded]
        if any(a in net for a in candidates for net in self.allow if a.version == net.version):
            return None
        for candidate in candidates:
            for why, net in BLOCKED:
                if candidate.version == net.version and candidate in net:
                    return why
        return None

    def check(self, address: str) -> str:
        """``address`` when it may be reached; raises ``PolicyViolation`` otherwise."""
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise PolicyViolation(f"not an IP address: {address[:64]!r}") from None
        why = self.refusal(parsed)
        if why is not None:
            raise PolicyViolation(
                f"{parsed} is a {why} address, not reachable under the egress policy",
                address=str(parsed),
                rule="egress",
            )
        return address

    def check_all(self, addresses: Sequence[str]) -> list[str]:
        """Every address vetted: one refused address refuses the name (no partial use)."""
        if not addresses:
            raise PolicyViolation("the name has no address", rule="egress")
        return [self.check(a) for a in addresses]

    def check_name(self, name: str) -> None:
        """Refuse, before any lookup, a DNS name whose addresses are known in advance:
        ``localhost`` and ``*.localhost`` (RFC 6761 section 6.3) and IP literals."""
        name = name.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            self.check(str(_LOCALHOST))
            return
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return
        self.check(name)


def _unique(infos: Iterable[tuple[object, ...]]) -> list[str]:
    addresses: list[str] = []
    for info in infos:
        sockaddr = info[4]
        assert isinstance(sockaddr, tuple)
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver (an IP literal is itself)."""
    return _unique(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


async def resolve_async(host: str, port: int) -> list[str]:
    """:func:`resolve` on the running event loop."""
    loop = asyncio.get_running_loop()
    return _unique(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
