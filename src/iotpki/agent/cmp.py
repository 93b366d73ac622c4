"""The agent's CMP link: a key update (``kur``) over HTTPS, signed with the current key.

Unlike EST re-enrollment, nothing here needs the key in a TLS handshake: the message is signed
with ``sign`` alone, so a key held in a PKCS#11 token or a TPM renews without the IDevID. The
errors are the EST client's, so the agent's back-off and exit codes do not change.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from iotpki.agent.client import EstRefused, EstUnreachable
from iotpki.core.ports import SystemClock
from iotpki.errors import MalformedInput
from iotpki.protocols.cmp.client import CmpRejected, key_update, read_key_update

__all__ = ["CmpClient"]

_MEDIA_TYPE = "application/pkixcmp"
_MAX_RESPONSE = 256 * 1024


@dataclass(frozen=True)
class CmpClient:
    """CMP key updates against one server (and optional label)."""

    server: str  # https://host:8443
    context: ssl.SSLContext
    label: str | None = None
    timeout: float = 30.0

    def _post(self, der: bytes) -> bytes:
        url = urlsplit(self.server)
        path = "/.well-known/cmp" + (f"/p/{self.label}" if self.label else "")
        connection = http.client.HTTPSConnection(
            url.hostname or "", url.port or 443, context=self.context, timeout=self.timeout
        )
        try:
            connection.request("POST", path, body=der, headers={"Content-Type": _MEDIA_TYPE})
            response = connection.getresponse()
            data = response.read(_MAX_RESPONSE)
        except (OSError, http.client.HTTPException) as exc:
            raise EstUnreachable(f"kur: {exc}") from exc
        finally:
            connection.close()
        if response.status >= 500:
            raise EstUnreachable(f"kur: HTTP {response.status}")
        if response.status != 200 or response.getheader("Content-Type") != _MEDIA_TYPE:
            raise EstRefused(response.status, data.decode("utf-8", "replace").strip()[:200])
        return data

    def key_update(
        self,
        current: x509.Certificate,
        current_key: CertificateIssuerPrivateKeyTypes,
        new_key: CertificateIssuerPrivateKeyTypes,
        trusted: Sequence[x509.Certificate],
    ) -> x509.Certificate:
        """The certificate for ``new_key`` that replaces ``current``."""
        sent = key_update(current, current_key, new_key, SystemClock().now())
        try:
            cert, implicit = read_key_update(self._post(sent.der), sent, trusted)
        except CmpRejected as exc:
            raise EstRefused(403, exc.message) from exc
        if not implicit:
            raise MalformedInput("the CA did not confirm the key update implicitly")
        return cert
