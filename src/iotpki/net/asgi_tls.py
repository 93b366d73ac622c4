"""Hand the TLS peer certificate to the ASGI application (the ASGI "tls" extension).

uvicorn terminates TLS but does not put the client certificate in the scope. This protocol
class reads it from the connection's ``SSLObject`` once per connection (the handshake is done
before ``connection_made``) and adds ``scope["extensions"]["tls"]`` as the ASGI TLS extension
specifies: ``client_cert_chain`` (PEM strings, leaf first), ``tls_version`` and
``cipher_suite``. Python's ``ssl`` exposes only the leaf of the peer's chain.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["TLSExtensionProtocol", "peer_certificate_pem"]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def peer_certificate_pem(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer certificate as PEM, or None when the peer sent none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der) if der else None


class TLSExtensionProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI TLS extension in every request scope."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Record the connection's TLS facts once."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            self._tls = None
            return
        pem = peer_certificate_pem(ssl_object)
        cipher = ssl_object.cipher()
        self._tls = {
            "server_cert": None,
            "client_cert_chain": [pem] if pem else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": None,
            "cipher_name": cipher[0] if cipher else None,
        }

    def on_message_begin(self) -> None:
        """Start a request scope that carries the connection's TLS facts."""
        super().on_message_begin()
        if self._tls is not None:
            extensions: dict[str, Any] = {"tls": self._tls}
            self.scope["extensions"] = extensions
