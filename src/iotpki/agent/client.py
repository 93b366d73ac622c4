"""A small EST client (RFC 7030) on the standard library's ``http.client`` and ``ssl``."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.errors import IotpkiError, MalformedInput
from iotpki.protocols.acme.messages import cert_id
from iotpki.protocols.est import messages

__all__ = ["EstClient", "EstPending", "EstRefused", "EstUnreachable", "RenewalInfo"]

_MAX_RESPONSE = 1024 * 1024


class EstRefused(IotpkiError):
    """The server answered the request with an error status (4xx)."""

    code = "est_refused"

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"server refused ({status}): {reason}", http_status=status)
        self.http_status = status


class EstUnreachable(IotpkiError):
    """The server could not be reached or failed (network error, TLS failure, 5xx)."""

    code = "est_unreachable"


class EstPending(IotpkiError):
    """The enrollment waits for approval; ask again after ``retry_after`` seconds."""

    code = "est_pending"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"enrollment waits for approval; retry in {retry_after}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class RenewalInfo:
    """A suggested renewal window (RFC 9773) and the seconds to wait before asking again."""

    start: datetime
    end: datetime
    retry_after: int | None = None


@dataclass(frozen=True)
class EstClient:
    """EST operations against one server (and optional label), over one TLS context."""

    server: str
    context: ssl.SSLContext
    label: str | None = None
    timeout: float = 30.0

    def _path(self, operation: str) -> str:
        base = "/.well-known/est"
        return f"{base}/{self.label}/{operation}" if self.label else f"{base}/{operation}"

    def _request(
        self,
        method: str,
        operation: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        url = urlsplit(self.server)
        connection = http.client.HTTPSConnection(
            url.hostname or "", url.port or 443, context=self.context, timeout=self.timeout
        )
        try:
            connection.request(method, self._path(operation), body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read(_MAX_RESPONSE)
        except (OSError, http.client.HTTPException) as exc:
            raise EstUnreachable(f"{operation}: {exc}") from exc
        finally:
            connection.close()
        if response.status == 202:
            retry = response.getheader("Retry-After", "60")
            raise EstPending(int(retry) if retry.isdigit() else 60)
        if 400 <= response.status < 500:
            reason = data.decode("utf-8", "replace").strip()[:200]
            raise EstRefused(response.status, reason or str(response.reason))
        if response.status != 200:
            raise EstUnreachable(f"{operation}: HTTP {response.status}")
        return data

    def cacerts(self) -> list[x509.Certificate]:
        """RFC 7030 section 4.1: the CA certificates."""
        body = self._request("GET", "cacerts")
        return messages.parse_certs_only(messages.decode_b64(body))

    def csrattrs(self) -> list[str]:
        """RFC 7030 section 4.5: the key types the CA asks for (for this client certificate,
        when the context presents one), most wanted first; empty when it names none."""
        body = self._request("GET", "csrattrs")
        return messages.parse_csr_attributes(messages.decode_b64(body)) if body.strip() else []

    def _enroll(
        self, operation: str, csr: x509.CertificateSigningRequest, headers: dict[str, str]
    ) -> x509.Certificate:
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        data = self._request("POST", operation, body, {"Content-Type": messages.PKCS10, **headers})
        certs = messages.parse_certs_only(messages.decode_b64(data))
        if len(certs) != 1:
            raise MalformedInput(f"{operation} returned {len(certs)} certificates, not one")
        return certs[0]

    def simpleenroll(
        self, csr: x509.CertificateSigningRequest, basic: tuple[str, str] | None = None
    ) -> x509.Certificate:
        """RFC 7030 section 4.2.1, authenticated by the context's client certificate or Basic."""
        headers = {}
        if basic is not None:
            token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return self._enroll("simpleenroll", csr, headers)

    def renewal_window(self, certificate: x509.Certificate) -> RenewalInfo | None:
        """The window the CA suggests for renewing ``certificate`` (RFC 9773 renewalInfo, which
        answers for certificates of every protocol and carries rotation campaigns' windows),
        with how long to wait before asking again; None when the server offers none."""
        url = urlsplit(self.server)
        connection = http.client.HTTPSConnection(
            url.hostname or "", url.port or 443, context=self.context, timeout=self.timeout
        )
        try:
            connection.request("GET", f"/acme/renewal-info/{cert_id(certificate)}")
            response = connection.getresponse()
            data = response.read(_MAX_RESPONSE)
        except (OSError, http.client.HTTPException) as exc:
            raise EstUnreachable(f"renewal-info: {exc}") from exc
        finally:
            connection.close()
        if response.status != 200:
            return None
        try:
            window = json.loads(data)["suggestedWindow"]
            start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedInput("the renewal information is not a suggestedWindow") from exc
        if not (start.tzinfo and end.tzinfo and start < end):
            return None
        retry = response.getheader("Retry-After", "")
        return RenewalInfo(start, end, int(retry) if retry.isdigit() else None)

    def simplereenroll(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """RFC 7030 section 4.2.2, authenticated by the current certificate (TLS)."""
        return self._enroll("simplereenroll", csr, {})
