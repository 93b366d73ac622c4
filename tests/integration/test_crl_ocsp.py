"""CRL publication and the OCSP responder in process: store, jobs' logic and HTTP routes."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from starlette.testclient import TestClient

from iotpki.core.authority import Issued
from iotpki.core.models import CertificateQuery, RevocationReason
from iotpki.core.revocation import issuer_hashes
from iotpki.server import Service, build_http_app
from iotpki.services.installation import Installation, open_installation

from conftest import ManualClock, device_csr, make_installation

_DER = serialization.Encoding.DER
_OCSP = {"content-type": "application/ocsp-request"}


@pytest.fixture
def service(inst: Installation) -> Iterator[Service]:
    svc = Service(inst)
    svc.revocation.refresh_responders()
    yield svc


@pytest.fixture
def client(service: Service) -> TestClient:
    return TestClient(build_http_app(service))


def _issue(inst: Installation, name: str = "dev-1") -> Issued:
    return inst.authority.issue(device_csr(name), profile="device", actor="test")


def _request(issued: Issued, nonce: bytes | None = None, digest: object = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        issued.certificate,
        issued.chain[1],
        digest or hashes.SHA1(),  # type: ignore[arg-type]
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(_DER)


def _ask(client: TestClient, der: bytes) -> ocsp.OCSPResponse:
    reply = client.post("/ocsp", content=der, headers=_OCSP)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(reply.content)


# -- CRLs -------------------------------------------------------------------------------------


def test_crls_for_every_ca_on_each_database(any_inst: Installation, clock: ManualClock) -> None:
    svc = Service(any_inst)
    publisher = svc.revocation.publisher
    made = publisher.publish_due(clock.now())
    assert sorted((c.ca_name, c.kind) for c in made) == [
        ("issuing", "delta"),
        ("issuing", "full"),
        ("root", "delta"),
        ("root", "full"),
    ]
    assert publisher.publish_due(clock.now()) == []
    issued = _issue(any_inst)
    any_inst.authority.revoke(
        issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )
    clock.advance(timedelta(seconds=2))
    assert publisher.due("issuing", clock.now()) == []  # debounced
    clock.advance(timedelta(seconds=5))
    assert publisher.due("issuing", clock.now()) == ["delta"]
    (delta,) = publisher.publish_due(clock.now())
    assert delta.der is not None
    crl = x509.load_der_x509_crl(delta.der)
    assert crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
    assert crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number == 1
    assert crl.is_signature_valid(issued.chain[1].public_key())  # type: ignore[arg-type]
    clock.advance(timedelta(seconds=60))
    assert publisher.due("issuing", clock.now()) == ["full", "delta"]
    full, new_delta = publisher.publish_due(clock.now())
    assert full.entries == 1 and new_delta.base_number == full.number
    assert new_delta.number > full.number > delta.number
    # The same CRL number is never stored twice, nor an older one over a newer.
    assert not svc.revocation.store.put_crl(delta)


def test_scheduled_regeneration_and_expired_entries_leave(
    inst: Installation, clock: ManualClock
) -> None:
    svc = Service(inst)
    publisher = svc.revocation.publisher
    issued = inst.authority.issue(
        device_csr("short"), profile="device", actor="test", lifetime=timedelta(hours=1)
    )
    inst.authority.revoke(issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="t")
    publisher.publish_due(clock.now())
    assert publisher.current("issuing", "full").entries == 1  # type: ignore[union-attr]
    clock.advance(timedelta(hours=6))
    assert publisher.due("issuing", clock.now()) == ["full", "delta"]
    publisher.publish_due(clock.now())
    assert publisher.current("issuing", "full").entries == 0  # type: ignore[union-attr]


def test_root_crl_lists_a_revoked_issuing_ca(inst: Installation, clock: ManualClock) -> None:
    svc = Service(inst)
    issuing = inst.authority.get_ca("issuing").certificate
    serial = format(issuing.serial_number, "x")
    inst.authority.revoke(serial, reason=RevocationReason.CA_COMPROMISE, actor="t", ca="root")
    full = svc.revocation.publisher.generate("root", "full", actor="test")
    assert full.der is not None
    crl = x509.load_der_x509_crl(full.der)
    entry = crl.get_revoked_certificate_by_serial_number(issuing.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.ca_compromise
    )
    # A revoked CA still signs CRLs for what it issued.
    assert svc.revocation.publisher.generate("issuing", "full", actor="test").der


def test_exclusive_lock(any_inst: Installation) -> None:
    store = Service(any_inst).revocation.store
    with store.exclusive("job") as first:
        assert first
        with store.exclusive("job") as second:
            assert not second  # held across processes: SQLite's worker processes too
    with store.exclusive("job") as again:
        assert again


def test_crl_route_files_and_command(tmp_path: Path, clock: ManualClock) -> None:
    marker = tmp_path / "published"
    script = "import os, sys; open(sys.argv[1], 'w').write(os.environ['IOTPKI_CRL_FILES'])"
    command = f'{sys.executable} -c "{script}" {marker}'
    inst = make_installation(
        tmp_path / "home", clock=clock, revocation={"publish_command": command}
    )
    try:
        svc = Service(inst)
        client = TestClient(build_http_app(svc))
        assert client.get("/crl/issuing.crl").status_code == 404  # nothing published yet
        svc.revocation.publish_due()
        reply = client.get("/crl/issuing.crl")
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/pkix-crl"
        crl = x509.load_der_x509_crl(reply.content)
        assert reply.headers["etag"] == '"issuing-full-1"'
        assert int(reply.headers["cache-control"].split("max-age=")[1]) <= 300
        assert "last-modified" in reply.headers and "expires" in reply.headers
        again = client.get("/crl/issuing.crl", headers={"if-none-match": reply.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        delta = x509.load_der_x509_crl(client.get("/crl/issuing-delta.crl").content)
        assert delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
        for path in (
            "/crl/nope.crl",
            "/crl/nope-delta.crl",
            "/crl/..%2f..%2fetc.crl",
            "/crl/A.crl",
        ):
            assert client.get(path).status_code == 404
        files = sorted(p.name for p in (inst.home / "crl").iterdir())
        assert files == ["issuing-delta.crl", "issuing.crl", "root-delta.crl", "root.crl"]
        assert (inst.home / "crl" / "issuing.crl").read_bytes() == reply.content
        assert "issuing.crl" in marker.read_text()
    finally:
        inst.close()


# -- OCSP -------------------------------------------------------------------------------------


def test_responder_certificate(service: Service, inst: Installation, clock: ManualClock) -> None:
    responder = service.revocation.responder.responder_certificate("issuing")
    assert responder is not None
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    responder.verify_directly_issued_by(inst.authority.get_ca("issuing").certificate)
    root_responder = service.revocation.responder.responder_certificate("root")
    assert root_responder is not None
    root_responder.verify_directly_issued_by(inst.authority.get_ca("root").certificate)
    # Renewed once a third of its life remains, not before.
    assert service.revocation.responder.ensure_responders(clock.now()) == []
    clock.advance(timedelta(days=5))
    assert service.revocation.responder.ensure_responders(clock.now()) == ["issuing", "root"]
    assert service.revocation.responder.responder_certificate("issuing") != responder
    renewed = service.revocation.responder.responder_certificate("issuing")
    restarted = Service(inst).revocation  # another replica, or the next start
    restarted.refresh_responders()
    assert restarted.responder.ensure_responders(clock.now()) == []  # nothing new issued
    assert restarted.responder.responder_certificate("issuing") == renewed


def test_good_then_revoked_at_once(
    service: Service, client: TestClient, inst: Installation
) -> None:
    issued = _issue(inst)
    request = _request(issued)
    response = _ask(client, request)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == issued.certificate.serial_number
    responder = service.revocation.responder.responder_certificate("issuing")
    assert response.certificates == [responder]
    assert responder is not None
    key = responder.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    get = client.get("/ocsp/" + base64.b64encode(request).decode())
    assert (
        get.status_code == 200
        and get.content == client.post("/ocsp", content=request, headers=_OCSP).content
    )
    assert "max-age=" in get.headers["cache-control"]
    assert {"etag", "last-modified", "expires"} <= set(get.headers)
    inst.authority.revoke(
        issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )
    revoked = _ask(client, request)
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    get = ocsp.load_der_ocsp_response(
        client.get("/ocsp/" + base64.b64encode(request).decode()).content
    )
    assert get.certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_revocation_in_another_process_is_seen_by_the_watch_job(
    service: Service, client: TestClient, inst: Installation, clock: ManualClock
) -> None:
    issued = _issue(inst)
    request = _request(issued)
    assert _ask(client, request).certificate_status is ocsp.OCSPCertStatus.GOOD
    service.revocation.watch()
    other = open_installation(inst.settings, clock=clock, lint=False)
    try:
        other.authority.revoke(issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="t")
    finally:
        other.close()
    assert _ask(client, request).certificate_status is ocsp.OCSPCertStatus.GOOD  # still cached
    service.revocation.watch()
    assert _ask(client, request).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_unknown_serial_is_never_good(client: TestClient, inst: Installation) -> None:
    issued = _issue(inst)
    issuer = issued.chain[1]
    name_hash, key_hash = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issued.certificate, issuer, hashes.SHA1())
        .build()
        .issuer_name_hash,
        ocsp.OCSPRequestBuilder()
        .add_certificate(issued.certificate, issuer, hashes.SHA1())
        .build()
        .issuer_key_hash,
    )
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, 123456789, hashes.SHA1())
        .build()
        .public_bytes(_DER)
    )
    assert _ask(client, request).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # The root's serials are not the issuing CA's: asking the root about a leaf is unknown.
    root = inst.authority.get_ca("root").certificate
    wrong_issuer = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issued.certificate, root, hashes.SHA1())
        .build()
        .public_bytes(_DER)
    )
    # Leaf's issuer name with the root's key: no CA here has that pair.
    assert _ask(client, wrong_issuer).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    root_name_hash, root_key_hash = issuer_hashes(root, "sha1")
    to_root = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            root_name_hash, root_key_hash, issued.certificate.serial_number, hashes.SHA1()
        )
        .build()
        .public_bytes(_DER)
    )
    assert _ask(client, to_root).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_nonce_is_echoed_and_sha256(client: TestClient, inst: Installation) -> None:
    issued = _issue(inst)
    first = _ask(client, _request(issued, nonce=b"a" * 16, digest=hashes.SHA256()))
    second = _ask(client, _request(issued, nonce=b"b" * 16, digest=hashes.SHA256()))
    assert first.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"a" * 16
    assert second.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"b" * 16
    assert isinstance(first.hash_algorithm, hashes.SHA256)
    assert first.certificate_status is ocsp.OCSPCertStatus.GOOD


def _multi_request(issued: list[Issued], nonce: bytes | None = None) -> bytes:
    from asn1crypto import core
    from asn1crypto import ocsp as asn1_ocsp

    items = []
    for one in issued:
        single = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(one.certificate, one.chain[1], hashes.SHA1())
            .build()
        )
        items.append(
            {
                "req_cert": {
                    "hash_algorithm": {"algorithm": "sha1"},
                    "issuer_name_hash": single.issuer_name_hash,
                    "issuer_key_hash": single.issuer_key_hash,
                    "serial_number": single.serial_number,
                }
            }
        )
    tbs: dict[str, object] = {"request_list": items}
    if nonce:
        tbs["request_extensions"] = [
            {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString(nonce)}
        ]
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def test_several_certificates_in_one_request(client: TestClient, inst: Installation) -> None:
    issued = [_issue(inst, f"dev-{i}") for i in range(3)]
    inst.authority.revoke(issued[1].record.serial, reason=RevocationReason.SUPERSEDED, actor="t")
    response = _ask(client, _multi_request(issued, nonce=b"xyz"))
    statuses = {single.serial_number: single.certificate_status for single in response.responses}
    assert statuses == {
        issued[0].certificate.serial_number: ocsp.OCSPCertStatus.GOOD,
        issued[1].certificate.serial_number: ocsp.OCSPCertStatus.REVOKED,
        issued[2].certificate.serial_number: ocsp.OCSPCertStatus.GOOD,
    }
    too_many = _multi_request([issued[0]] * 17)
    assert _ask(client, too_many).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def _audited_refusals(inst: Installation) -> int:
    return sum(1 for e in inst.store.audit_events() if e.action == "ocsp.refused")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        (b"\x30\x03\x02\x01\x01", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        (b"garbage" * 10, ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
    ],
    ids=["empty", "not-a-request", "garbage"],
)
def test_bad_post_bodies(
    client: TestClient, inst: Installation, body: bytes, status: ocsp.OCSPResponseStatus
) -> None:
    before = _audited_refusals(inst)
    assert _ask(client, body).response_status is status
    assert _audited_refusals(inst) == before + 1


def test_hostile_requests(client: TestClient, inst: Installation) -> None:
    issued = _issue(inst)
    request = _request(issued)
    truncated = _ask(client, request[:-5])
    assert truncated.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    long_nonce = _ask(client, _request(issued, nonce=b"n" * 33))
    assert long_nonce.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    stranger_ca = ec.generate_private_key(ec.SECP256R1())
    foreign = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            b"\x01" * 20,
            x509.SubjectKeyIdentifier.from_public_key(stranger_ca.public_key()).digest,
            5,
            hashes.SHA1(),
        )
        .build()
        .public_bytes(_DER)
    )
    assert _ask(client, foreign).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    huge = client.post("/ocsp", content=b"\x30" * 20_000, headers=_OCSP)
    assert huge.status_code == 413
    wrong_type = client.post("/ocsp", content=request, headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    bad_get = client.get("/ocsp/%%%not-base64")
    assert bad_get.status_code == 200
    assert ocsp.load_der_ocsp_response(bad_get.content).response_status is (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    assert client.get("/ocsp/" + "A" * 9000).status_code in (200, 414)
    # None of it changed a certificate.
    assert inst.authority.get(issued.record.serial).status.value == "valid"


def test_presign_and_refresh(service: Service, inst: Installation, clock: ManualClock) -> None:
    responder = service.revocation.responder
    issued = [_issue(inst, f"dev-{i}") for i in range(3)]
    inst.authority.revoke(issued[0].record.serial, reason=RevocationReason.SUPERSEDED, actor="t")
    before = responder.cache_size()
    signed = responder.presign(clock.now())
    assert signed >= 3 and responder.cache_size() == before + signed
    assert responder.presign(clock.now()) == 0  # nothing new
    clock.advance(timedelta(hours=3))
    assert responder.refresh(clock.now()) == responder.cache_size()
    search = inst.authority.search(CertificateQuery(profile="ocsp-signer"))
    assert len(search) == 2  # one responder certificate per CA, issued once
