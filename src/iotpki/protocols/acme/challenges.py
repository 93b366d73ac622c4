"""Challenge validation over the network: http-01 and dns-01 (RFC 8555 section 8.3, 8.4) and
tls-alpn-01 (RFC 8737), for dns and ip (RFC 8738) identifiers.

A :class:`Validator` raises an :class:`AcmeProblem` when a challenge fails. The network one is
:class:`NetworkValidator`; its ports, resolvers and name overrides come from settings so that
test setups can point validation at 127.0.0.1 as pebble does (off by default).

Every connection obeys the egress policy (:mod:`iotpki.net.egress`): a name is resolved once,
each of its addresses vetted, and the connection made to a vetted address with the name as
Host header or SNI; a test setup on 127.0.0.1 allows it explicitly (``egress_allow``).
Redirects are not followed: a 3xx is an unexpected response. Errors never echo what the
target answered (status, body, TLS alerts): it may be an internal service.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

from cryptography import x509

from iotpki.core.acme_ports import Identifier
from iotpki.errors import PolicyViolation
from iotpki.net.egress import AsyncResolver, EgressPolicy, resolve_async
from iotpki.protocols.acme.jws import b64url_encode
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "ACME_TLS_ALPN",
    "CONNECTION_FAILED",
    "ID_PE_ACME_IDENTIFIER",
    "NetworkValidator",
    "ValidationSettings",
    "Validator",
    "dns01_digest",
]

ACME_TLS_ALPN = "acme-tls/1"
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 section 3
_MAX_BODY = 8192
CONNECTION_FAILED = "connection to the challenge target failed"
_UNEXPECTED = "unexpected response from the challenge target"
_REFUSED = "the challenge target's address is not reachable under this server's egress policy"


class Validator(Protocol):
    """Proves control of an identifier; raises ``AcmeProblem`` when the proof fails."""

    async def validate(
        self, challenge_type: str, identifier: Identifier, token: str, key_authorization: str
    ) -> None:
        """Check one challenge answer."""
        ...


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Where validation connects: ports, DNS resolvers, test-only name overrides and the
    egress policy every address is vetted against."""

    http01_port: int = 80
    tlsalpn01_port: int = 443
    dns_resolvers: tuple[str, ...] = ()
    resolve_override: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    @classmethod
    def from_text(
        cls,
        *,
        http01_port: int,
        tlsalpn01_port: int,
        dns_resolvers: tuple[str, ...],
        resolve_override: tuple[str, ...],
        timeout: float,
        egress_allow: tuple[str, ...] = (),
    ) -> ValidationSettings:
        """Build from settings text, ``resolve_override`` as ``pattern=address`` entries and
        ``egress_allow`` as networks."""
        overrides: list[tuple[str, str]] = []
        for entry in resolve_override:
            pattern, eq, address = entry.partition("=")
            ipaddress.ip_address(address.strip())
            if not eq or not pattern.strip():
                raise ValueError(f"resolve override {entry!r}: use pattern=address")
            overrides.append((pattern.strip().lower(), address.strip()))
        egress = EgressPolicy.from_text(egress_allow)
        return cls(http01_port, tlsalpn01_port, dns_resolvers, tuple(overrides), timeout, egress)


def dns01_digest(key_authorization: str) -> str:
    """The TXT record value of dns-01: base64url(SHA-256(key authorization)) (section 8.4)."""
    return b64url_encode(hashlib.sha256(key_authorization.encode()).digest())


def _nameserver(entry: str) -> tuple[str, int]:
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]:")
        return host, int(port or 53)
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, 53


class NetworkValidator:
    """Validates challenges by connecting to the identifier, as RFC 8555 and RFC 8737 say."""

    def __init__(
        self, settings: ValidationSettings, resolver: AsyncResolver = resolve_async
    ) -> None:
        self.settings = settings
        self._resolve = resolver

    async def validate(
        self, challenge_type: str, identifier: Identifier, token: str, key_authorization: str
    ) -> None:
        """Run the check for ``challenge_type`` within the configured timeout."""
        checks = {"http-01": self._http01, "dns-01": self._dns01, "tls-alpn-01": self._tls_alpn01}
        check = checks.get(challenge_type)
        if check is None:
            raise AcmeProblem("malformed", f"unknown challenge type {challenge_type}")
        try:
            await asyncio.wait_for(
                check(identifier, token, key_authorization), self.settings.timeout
            )
        except TimeoutError:
            raise AcmeProblem(
                "connection", f"{challenge_type} for {identifier[1]} timed out"
            ) from None

    async def _addresses(self, identifier: Identifier, port: int) -> list[str]:
        """The vetted addresses to connect to: resolved once, every one checked."""
        kind, value = identifier
        if kind == "ip":
            addresses = [value]
        else:
            overrides = self.settings.resolve_override
            addresses = [a for p, a in overrides if fnmatchcase(value, p)][:1]
        if not addresses:
            try:
                addresses = list(await self._resolve(value, port))
            except OSError:
                raise AcmeProblem("dns", f"cannot resolve {value}") from None
        if not addresses:
            raise AcmeProblem("dns", f"no address for {value}")
        try:
            return self.settings.egress.check_all(addresses)
        except PolicyViolation:
            # Not which address nor why: the server's resolver may know internal names.
            raise AcmeProblem("connection", f"{value}: {_REFUSED}") from None

    async def _connect(
        self, identifier: Identifier, port: int, tls: ssl.SSLContext | None, sni: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for address in await self._addresses(identifier, port):
            try:
                return await asyncio.open_connection(
                    address, port, ssl=tls, server_hostname=sni if tls else None
                )
            except ssl.SSLError:
                raise AcmeProblem("tls", f"TLS with {identifier[1]}:{port} failed") from None
            except OSError:
                continue
        raise AcmeProblem("connection", f"{identifier[1]}:{port}: {CONNECTION_FAILED}")

    async def _http01(self, identifier: Identifier, token: str, key_authorization: str) -> None:
        """Section 8.3: GET http://<identifier>/.well-known/acme-challenge/<token>."""
        port = self.settings.http01_port
        kind, value = identifier
        host = f"[{value}]" if kind == "ip" and ":" in value else value
        if port != 80:
            host = f"{host}:{port}"
        reader, writer = await self._connect(identifier, port, None, None)
        try:
            writer.write(
                (
                    f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {host}\r\n"
                    "User-Agent: iotpki-acme\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                ).encode()
            )
            status, body = await _read_response(reader)
        except (OSError, EOFError):
            raise AcmeProblem("connection", f"http-01 to {value}: {CONNECTION_FAILED}") from None
        except ValueError:
            raise AcmeProblem("incorrectResponse", f"http-01 to {value}: {_UNEXPECTED}") from None
        finally:
            writer.close()
        if status != 200:
            raise AcmeProblem("incorrectResponse", f"http-01 to {value}: {_UNEXPECTED}")
        # Section 8.3: the body is the key authorization, trailing whitespace allowed.
        if body.decode("utf-8", "replace").rstrip() != key_authorization:
            raise AcmeProblem("incorrectResponse", f"http-01: wrong key authorization at {value}")

    async def _dns01(self, identifier: Identifier, token: str, key_authorization: str) -> None:
        """Section 8.4: a TXT record at _acme-challenge.<name> holds the digest."""
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        resolver = dns.asyncresolver.Resolver(configure=not self.settings.dns_resolvers)
        if self.settings.dns_resolvers:
            servers = [_nameserver(e) for e in self.settings.dns_resolvers]
            resolver.nameservers = [host for host, _ in servers]
            resolver.port = servers[0][1]
        resolver.lifetime = self.settings.timeout
        name = f"_acme-challenge.{identifier[1]}"
        try:
            answer = await resolver.resolve(name, "TXT")
        except dns.resolver.NXDOMAIN:
            raise AcmeProblem("dns", f"dns-01: no such name {name}") from None
        except dns.resolver.NoAnswer:
            raise AcmeProblem("dns", f"dns-01: no TXT record at {name}") from None
        except dns.exception.DNSException as exc:
            raise AcmeProblem("dns", f"dns-01: lookup of {name} failed: {exc}") from exc
        expected = dns01_digest(key_authorization)
        values = {b"".join(r.strings).decode("ascii", "replace") for r in answer}
        if expected not in values:
            raise AcmeProblem("incorrectResponse", f"dns-01: no matching TXT record at {name}")

    async def _tls_alpn01(self, identifier: Identifier, token: str, key_authorization: str) -> None:
        """RFC 8737 section 3: ALPN acme-tls/1, a certificate naming only the identifier and
        carrying a critical acmeIdentifier extension with SHA-256 of the key authorization."""
        kind, value = identifier
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols([ACME_TLS_ALPN])
        # RFC 8738 section 6: for an IP identifier the SNI is its reverse-mapping name.
        sni = ipaddress.ip_address(value).reverse_pointer if kind == "ip" else value
        _, writer = await self._connect(identifier, self.settings.tlsalpn01_port, context, sni)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        finally:
            writer.close()
        if alpn != ACME_TLS_ALPN:
            raise AcmeProblem("tls", f"tls-alpn-01: {value} did not negotiate {ACME_TLS_ALPN}")
        if not der:
            raise AcmeProblem("tls", f"tls-alpn-01: {value} sent no certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise AcmeProblem("incorrectResponse", f"tls-alpn-01: {_UNEXPECTED}") from None
        _check_alpn_certificate(cert, identifier, key_authorization)


def _check_alpn_certificate(
    cert: x509.Certificate, identifier: Identifier, key_authorization: str
) -> None:
    kind, value = identifier
    try:
        sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    except x509.ExtensionNotFound as exc:
        raise AcmeProblem("incorrectResponse", f"tls-alpn-01: certificate lacks {exc}") from None
    except ValueError:
        raise AcmeProblem("incorrectResponse", f"tls-alpn-01: {_UNEXPECTED}") from None
    wanted: x509.GeneralName = (
        x509.IPAddress(ipaddress.ip_address(value)) if kind == "ip" else x509.DNSName(value)
    )
    if len(sans) != 1 or sans[0] != wanted:
        raise AcmeProblem("incorrectResponse", "tls-alpn-01: the SAN must be the identifier only")
    if not extension.critical:
        raise AcmeProblem("incorrectResponse", "tls-alpn-01: acmeIdentifier must be critical")
    digest = hashlib.sha256(key_authorization.encode()).digest()
    raw = extension.value.public_bytes()
    if raw != b"\x04\x20" + digest:
        raise AcmeProblem("incorrectResponse", "tls-alpn-01: acmeIdentifier does not match")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of a small HTTP/1.x response (Content-Length, chunked or to close)."""
    status_line = await reader.readline()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP/1.x response")
    headers: dict[bytes, bytes] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
        if len(headers) > 100:
            raise ValueError("too many headers")
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while len(body) <= _MAX_BODY:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if length > _MAX_BODY:
            raise ValueError("response body too large")
        body = await reader.readexactly(length)
    else:
        body = await reader.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise ValueError("response body too large")
    return int(parts[1]), body
