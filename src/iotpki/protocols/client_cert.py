"""The TLS client certificate of a request: from our own TLS listener, or from a proxy.

When iotpki terminates TLS, :mod:`iotpki.net.asgi_tls` puts the verified peer certificate in the
ASGI scope (``extensions.tls.client_cert_chain``). Behind a TLS-terminating reverse proxy the
proxy forwards it in a header; the header is believed only when the connection comes from one
of the configured proxy addresses, and a request carrying it from anywhere else is refused.

Header forms accepted: URL-encoded PEM (nginx ``$ssl_client_escaped_cert``, Traefik), PEM whose
line breaks became spaces or tabs (nginx ``$ssl_client_cert``, Apache), and bare base64 DER
(HAProxy ``ssl_c_der,base64``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography import x509
from starlette.requests import Request

from iotpki.errors import Forbidden, MalformedInput

__all__ = ["ClientCertSource", "parse_forwarded_certificate"]

_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
_MAX_HEADER = 16 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_forwarded_certificate(value: str) -> x509.Certificate:
    """A certificate from a proxy header value in any of the accepted forms."""
    if len(value) > _MAX_HEADER:
        raise MalformedInput("client certificate header too long")
    text = unquote(value).strip()
    inner = text.split(_PEM_BEGIN, 1)[1].split(_PEM_END, 1)[0] if _PEM_BEGIN in text else text
    compact = "".join(inner.split())
    try:
        der = base64.b64decode(compact, validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise MalformedInput(f"client certificate header does not parse: {exc}") from exc


@dataclass(frozen=True)
class ClientCertSource:
    """Where client certificates are taken from: direct TLS, and trusted proxies' header."""

    trusted_proxies: tuple[Network, ...] = ()
    header: str = "x-ssl-client-cert"

    @classmethod
    def from_settings(cls, proxies: Iterable[str], header: str) -> ClientCertSource:
        """Parse proxy addresses or networks (``10.0.0.5``, ``10.1.0.0/16``, ``::1``)."""
        return cls(tuple(ipaddress.ip_network(p, strict=False) for p in proxies), header.lower())

    def _from_proxy(self, request: Request) -> bool:
        if request.client is None or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def certificate(self, request: Request) -> x509.Certificate | None:
        """The request's client certificate, or None when it has none.

        Raises ``Forbidden`` for the proxy header from an untrusted address, and
        ``MalformedInput`` for a header that does not parse.
        """
        forwarded = request.headers.get(self.header)
        if forwarded is not None:
            if not self._from_proxy(request):
                raise Forbidden("client certificate header from an address that is not a proxy")
            return parse_forwarded_certificate(forwarded) if forwarded.strip() else None
        tls = request.scope.get("extensions", {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        return x509.load_pem_x509_certificate(chain[0].encode())
