"""Hostile CSRs at every EST entry: a 400 with the decoder's reason, one refusal audited, the
secret still unused and no certificate issued. Each of these was a 500 before the CSR was read
through in one guarded decode."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from csrkit import HOSTILE, good_csr_der
from estkit import basic
from iotpki.core.models import CertificateQuery
from iotpki.server import Service, build_https_app, enrollment
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr, make_installation

EST = "https://est.test/.well-known/est"
OPERATIONS = ["simpleenroll", "serverkeygen", "simplereenroll"]


@pytest.fixture(scope="module")
def est_inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    home: Path = tmp_path_factory.mktemp("est-hostile") / "home"
    inst = make_installation(home, clock=ManualClock(), trusted_proxies=("127.0.0.1",))
    yield inst
    inst.close()


@pytest.fixture(scope="module")
def client(est_inst: Installation) -> Iterator[TestClient]:
    app = build_https_app(Service(est_inst))
    with TestClient(app, base_url="https://est.test", client=("127.0.0.1", 4321)) as c:
        yield c


def _count(inst: Installation) -> int:
    return len(inst.authority.search(CertificateQuery(limit=1000)))


def _post(
    client: TestClient, operation: str, der: bytes, device: str, secret: str
) -> httpx.Response:
    return client.post(
        f"{EST}/{operation}",
        content=base64.encodebytes(der),
        headers={"Content-Type": "application/pkcs10", **basic(device, secret)},
    )


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_csr_is_a_400_with_a_reason(
    client: TestClient, est_inst: Installation, operation: str, case: str
) -> None:
    device = f"h-{operation}-{case}"
    secret, _ = enrollment(est_inst).create_secret(device, actor="test")
    # a new refusal window, so that this refusal is written at once rather than folded into
    # the count of the previous case's (same source, action and code)
    clock = est_inst.authority.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(minutes=2))
    before = _count(est_inst)
    response = _post(client, operation, HOSTILE[case], device, secret)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    reason = response.text.strip()
    assert reason
    assert _count(est_inst) == before
    event = list(est_inst.store.audit_events())[-1]
    assert event.action == f"est.{operation}.refused"
    assert event.data["code"] == "malformed"
    assert event.data["reason"] == reason


def test_secret_survives_hostile_attempts(client: TestClient, est_inst: Installation) -> None:
    secret, _ = enrollment(est_inst).create_secret("dev-1", actor="test")
    for der in HOSTILE.values():
        assert _post(client, "simpleenroll", der, "dev-1", secret).status_code == 400
    good = device_csr("dev-1").public_bytes(serialization.Encoding.DER)
    assert _post(client, "simpleenroll", good, "dev-1", secret).status_code == 200


def test_wrong_content_type_is_a_415(client: TestClient) -> None:
    response = client.post(
        f"{EST}/simpleenroll",
        content=base64.encodebytes(good_csr_der()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 415
    assert "application/pkcs10" in response.text


def test_oversized_body_is_a_413(client: TestClient) -> None:
    response = client.post(
        f"{EST}/simpleenroll",
        content=b"A" * (1 << 20),
        headers={"Content-Type": "application/pkcs10"},
    )
    assert response.status_code == 413
    assert "exceeds the limit" in response.text
