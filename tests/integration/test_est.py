"""EST routes in process: authentication by secret, IDevID and current certificate (the last
two through the trusted-proxy header), approvals, server key generation and bad input."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from estkit import Manufacturer, b64_csr, basic
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import CertificateQuery, RevocationReason
from iotpki.protocols.est import messages
from iotpki.server import Service, build_https_app, enrollment
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr, make_installation

EST = "https://est.test/.well-known/est"
HEADER = "x-ssl-client-cert"


@pytest.fixture
def est_inst(tmp_path: Path, clock: ManualClock) -> Iterator[Installation]:
    inst = make_installation(
        tmp_path / "home", clock=clock, trusted_proxies=("127.0.0.1",), est_retry_after=7
    )
    yield inst
    inst.close()


@pytest.fixture
def service(est_inst: Installation) -> Enrollment:
    return enrollment(est_inst)


@pytest.fixture
def client(est_inst: Installation) -> Iterator[TestClient]:
    app = build_https_app(Service(est_inst))
    with TestClient(app, base_url="https://est.test", client=("127.0.0.1", 4321)) as c:
        yield c


def _pem_header(cert: x509.Certificate) -> dict[str, str]:
    """The client certificate as nginx forwards it ($ssl_client_escaped_cert)."""
    return {HEADER: quote(cert.public_bytes(serialization.Encoding.PEM).decode())}


def _issued(response: httpx.Response) -> x509.Certificate:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/pkcs7-mime")
    certs = messages.parse_certs_only(messages.decode_b64(response.content))
    assert len(certs) == 1
    return certs[0]


def _count(inst: Installation) -> int:
    return len(inst.authority.search(CertificateQuery(limit=1000)))


def _actions(inst: Installation) -> list[str]:
    return [e.action for e in inst.store.audit_events()]


def _enroll(
    client: TestClient, csr: x509.CertificateSigningRequest, headers: dict[str, str]
) -> httpx.Response:
    return client.post(
        f"{EST}/simpleenroll",
        content=b64_csr(csr),
        headers={"Content-Type": "application/pkcs10", **headers},
    )


def test_cacerts_is_the_chain_as_base64_certs_only(
    client: TestClient, est_inst: Installation
) -> None:
    response = client.get(f"{EST}/cacerts")
    assert response.status_code == 200
    assert response.headers["content-transfer-encoding"] == "base64"
    certs = messages.parse_certs_only(messages.decode_b64(response.content))
    assert set(certs) == set(est_inst.authority.chain("issuing"))  # a SET OF: DER order


def test_csrattrs_names_the_profile_key_types(client: TestClient) -> None:
    response = client.get(f"{EST}/csrattrs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/csrattrs"
    der = messages.decode_b64(response.content)
    assert der == messages.csr_attributes(("p256", "p384", "rsa", "ed25519"))


def test_secret_enrolls_once(
    client: TestClient, service: Enrollment, est_inst: Installation
) -> None:
    secret, _ = service.create_secret("dev-1", actor="test")
    cert = _issued(_enroll(client, device_csr("dev-1"), basic("dev-1", secret)))
    assert cert.subject.rfc4514_string() == "CN=dev-1"
    again = _enroll(client, device_csr("dev-1"), basic("dev-1", secret))
    assert again.status_code == 401
    assert "already used" in again.text
    assert _count(est_inst) == 2  # the TLS server certificate and dev-1's
    assert "est.enrolled" in _actions(est_inst)


def test_expired_secret_is_refused(
    client: TestClient, service: Enrollment, clock: ManualClock
) -> None:
    secret, _ = service.create_secret("dev-2", actor="test", lifetime=timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    response = _enroll(client, device_csr("dev-2"), basic("dev-2", secret))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


def test_failed_guesses_lock_the_device(
    client: TestClient, service: Enrollment, est_inst: Installation, clock: ManualClock
) -> None:
    secret, _ = service.create_secret("dev-3", actor="test")
    for _ in range(5):
        response = _enroll(client, device_csr("dev-3"), basic("dev-3", "guess"))
        assert response.status_code == 401
    locked = _enroll(client, device_csr("dev-3"), basic("dev-3", secret))
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    clock.advance(timedelta(minutes=16))
    _issued(_enroll(client, device_csr("dev-3"), basic("dev-3", secret)))


def test_csr_for_another_device_issues_nothing(
    client: TestClient, service: Enrollment, est_inst: Installation
) -> None:
    secret, _ = service.create_secret("dev-4", actor="test")
    before = _count(est_inst)
    response = _enroll(client, device_csr("someone-else"), basic("dev-4", secret))
    assert response.status_code == 400
    assert "not the device ID" in response.text
    assert _count(est_inst) == before
    _issued(_enroll(client, device_csr("dev-4"), basic("dev-4", secret)))  # not consumed


def test_idevid_any_device_of_the_manufacturer(client: TestClient, service: Enrollment) -> None:
    maker = Manufacturer.create()
    service.add_bootstrap_ca("acme", maker.cert, enroll_policy="any", actor="test")
    _key, idevid = maker.idevid("SN-0001")
    cert = _issued(_enroll(client, device_csr("SN-0001"), _pem_header(idevid)))
    assert cert.subject.rfc4514_string() == "CN=SN-0001"
    wrong = _enroll(client, device_csr("SN-0002"), _pem_header(idevid))
    assert wrong.status_code == 400


def test_idevid_registered_devices_only(client: TestClient, service: Enrollment) -> None:
    maker = Manufacturer.create()
    service.add_bootstrap_ca("acme", maker.cert, enroll_policy="registered", actor="test")
    _key, idevid = maker.idevid("SN-0100")
    refused = _enroll(client, device_csr("SN-0100"), _pem_header(idevid))
    assert refused.status_code == 403
    service.register_device("pump-7", bootstrap_ca="acme", idevid="SN-0100", actor="test")
    cert = _issued(_enroll(client, device_csr("pump-7"), _pem_header(idevid)))
    assert cert.subject.rfc4514_string() == "CN=pump-7"


def test_untrusted_and_revoked_manufacturers(
    client: TestClient, service: Enrollment, est_inst: Installation
) -> None:
    stranger = Manufacturer.create("Other CA")
    _key, foreign = stranger.idevid("SN-9")
    assert (_enroll(client, device_csr("SN-9"), _pem_header(foreign))).status_code == 401
    maker = Manufacturer.create()
    service.add_bootstrap_ca("acme", maker.cert, enroll_policy="any", actor="test")
    service.revoke_bootstrap_ca("acme", actor="test")
    _key, idevid = maker.idevid("SN-10")
    assert (_enroll(client, device_csr("SN-10"), _pem_header(idevid))).status_code == 403
    assert "est.authenticate.refused" in _actions(est_inst)


def test_proxy_header_only_from_trusted_addresses(
    est_inst: Installation, service: Enrollment
) -> None:
    maker = Manufacturer.create()
    service.add_bootstrap_ca("acme", maker.cert, enroll_policy="any", actor="test")
    _key, idevid = maker.idevid("SN-11")
    app = build_https_app(Service(est_inst))
    with TestClient(app, base_url="https://est.test", client=("10.1.2.3", 5555)) as outsider:
        response = _enroll(outsider, device_csr("SN-11"), _pem_header(idevid))
    assert response.status_code == 403
    assert "not a proxy" in response.text


def test_reenroll_with_current_certificate_rekeys(
    client: TestClient, service: Enrollment, est_inst: Installation, clock: ManualClock
) -> None:
    secret, _ = service.create_secret("dev-5", actor="test")
    first = _issued(_enroll(client, device_csr("dev-5"), basic("dev-5", secret)))
    new_key = ec.generate_private_key(ec.SECP256R1())
    response = client.post(
        f"{EST}/simplereenroll",
        content=b64_csr(device_csr("dev-5", key=new_key)),
        headers={"Content-Type": "application/pkcs10", **_pem_header(first)},
    )
    second = _issued(response)
    assert second.subject == first.subject
    assert second.public_key() == new_key.public_key()
    other = client.post(
        f"{EST}/simplereenroll",
        content=b64_csr(device_csr("dev-6")),
        headers={"Content-Type": "application/pkcs10", **_pem_header(second)},
    )
    assert other.status_code == 400
    est_inst.authority.revoke(
        format(second.serial_number, "x"), reason=RevocationReason.KEY_COMPROMISE, actor="t"
    )
    revoked = client.post(
        f"{EST}/simplereenroll",
        content=b64_csr(device_csr("dev-5")),
        headers={"Content-Type": "application/pkcs10", **_pem_header(second)},
    )
    assert revoked.status_code == 403
    clock.advance(timedelta(days=31))
    expired = client.post(
        f"{EST}/simplereenroll",
        content=b64_csr(device_csr("dev-5")),
        headers={"Content-Type": "application/pkcs10", **_pem_header(first)},
    )
    assert expired.status_code == 401
    assert "expired" in expired.text


def test_manual_approval(client: TestClient, service: Enrollment, est_inst: Installation) -> None:
    secret, _ = service.create_secret("dev-7", actor="test", approval=True)
    csr = device_csr("dev-7")
    waiting = _enroll(client, csr, basic("dev-7", secret))
    assert waiting.status_code == 202
    assert waiting.headers["retry-after"] == "7"
    assert (_enroll(client, csr, basic("dev-7", secret))).status_code == 202
    [pending] = service.list_approvals()
    service.decide(pending.request_id, approve=True, actor="operator")
    _issued(_enroll(client, csr, basic("dev-7", secret)))
    [done] = service.list_approvals("issued")
    assert done.serial is not None
    secret2, _ = service.create_secret("dev-8", actor="test", approval=True)
    csr2 = device_csr("dev-8")
    assert (_enroll(client, csr2, basic("dev-8", secret2))).status_code == 202
    [pending2] = service.list_approvals()
    service.decide(pending2.request_id, approve=False, actor="operator")
    assert (_enroll(client, csr2, basic("dev-8", secret2))).status_code == 403


def test_serverkeygen_returns_key_and_certificate(client: TestClient, service: Enrollment) -> None:
    secret, _ = service.create_secret("dev-9", actor="test")
    response = client.post(
        f"{EST}/serverkeygen",
        content=b64_csr(device_csr("dev-9")),
        headers={"Content-Type": "application/pkcs10", **basic("dev-9", secret)},
    )
    assert response.status_code == 200, response.text
    parts = messages.parse_multipart(response.headers["content-type"], response.content)
    assert [media for media, _ in parts] == ["application/pkcs8", "application/pkcs7-mime"]
    key = serialization.load_der_private_key(parts[0][1], None)
    [cert] = messages.parse_certs_only(parts[1][1])
    assert cert.public_key() == key.public_key()


def test_label_picks_profile(client: TestClient, service: Enrollment) -> None:
    secret, _ = service.create_secret("gw-1", actor="test")
    response = client.post(
        f"{EST}/gateway/simpleenroll",
        content=b64_csr(device_csr("gw-1")),
        headers={"Content-Type": "application/pkcs10", **basic("gw-1", secret)},
    )
    cert = _issued(response)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert len(list(eku)) == 2
    assert (client.get(f"{EST}/nosuchlabel/cacerts")).status_code == 404
    other, _ = service.create_secret("gw-2", actor="test")
    server = client.post(
        f"{EST}/server/simpleenroll",
        content=b64_csr(device_csr("gw-2")),
        headers={"Content-Type": "application/pkcs10", **basic("gw-2", other)},
    )
    assert server.status_code == 400  # the server profile does not issue device certificates


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"!!! not base64 !!!", {"Content-Type": "application/pkcs10"}, 400),
        (base64.b64encode(b"\x30\x03\x02\x01\x00"), {"Content-Type": "application/pkcs10"}, 400),
        (b"", {"Content-Type": "application/pkcs10"}, 400),
        (b"MIIB", {"Content-Type": "text/plain"}, 415),
        (b"A" * 40000, {"Content-Type": "application/pkcs10"}, 413),
        (b"MIIB", {"Content-Type": "application/pkcs10", "Authorization": "Bearer x"}, 400),
        (b"MIIB", {"Content-Type": "application/pkcs10", HEADER: "garbage%%"}, 400),
    ],
)
def test_bad_input_issues_nothing(
    client: TestClient,
    est_inst: Installation,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    before = _count(est_inst)
    response = client.post(f"{EST}/simpleenroll", content=body, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert _count(est_inst) == before
    assert _actions(est_inst)[-1].endswith(".refused")


def test_missing_authentication(client: TestClient, est_inst: Installation) -> None:
    response = _enroll(client, device_csr("dev-x"), {})
    assert response.status_code == 401
    bad = _enroll(client, device_csr("dev-x"), {"Authorization": "Basic !!"})
    assert bad.status_code == 401
    reenroll = client.post(
        f"{EST}/simplereenroll",
        content=b64_csr(device_csr("dev-x")),
        headers={"Content-Type": "application/pkcs10"},
    )
    assert reenroll.status_code == 401
