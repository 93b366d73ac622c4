"""The SCEP listener in process, for integration tests: the HTTP app, its service and RA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from starlette.testclient import TestClient

from iotpki.core.models import CertificateQuery
from iotpki.core.scep import ScepService
from iotpki.protocols.scep.client import CertRep
from iotpki.server import Service, build_http_app, scep_service
from iotpki.services.installation import Installation
from scepkit import Device, ca_ra_certs, rsa_key

from conftest import ManualClock, make_installation

__all__ = ["PKI", "URL", "Scep", "running_scep"]

URL = "/scep"
PKI = {"operation": "PKIOperation"}


@dataclass
class Scep:
    """The HTTP application, the SCEP service behind it and the RA a client would fetch."""

    inst: Installation
    http: TestClient
    service: ScepService
    clock: ManualClock
    ra: x509.Certificate
    chain: list[x509.Certificate]

    def post(self, der: bytes) -> CertRep:
        response = self.http.post(URL, params=PKI, content=der)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-pki-message"
        rep = Device("reader", rsa_key(0)).read(response.content, self.ra, self.clock.now())
        return rep

    def challenge(self, device_id: str, **options: object) -> str:
        secret, _ = self.service.create_challenge(device_id, actor="test", **options)  # type: ignore[arg-type]
        return secret

    def issued_count(self) -> int:
        return len(self.inst.authority.search(CertificateQuery(profile="device")))

    def last_event(self, action: str) -> dict[str, object]:
        events = [e for e in self.inst.store.audit_events() if e.action == action]
        assert events, f"no {action} event"
        return events[-1].data


@contextlib.contextmanager
def running_scep(home: Path, clock: ManualClock, **settings: object) -> Iterator[Scep]:
    """An installation in ``home`` and its plain-HTTP app, with the RA fetched by GetCACert."""
    inst = make_installation(home, clock=clock, **settings)
    try:
        with TestClient(build_http_app(Service(inst)), client=("127.0.0.1", 5555)) as http:
            response = http.get(URL, params={"operation": "GetCACert"})
            ra, chain = ca_ra_certs(response.content)
            yield Scep(inst, http, scep_service(inst), clock, ra, chain)
    finally:
        inst.close()
