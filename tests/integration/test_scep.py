"""SCEP (RFC 8894) in process: every operation and message type, idempotency, approvals and
bad input, through the HTTP application the server runs."""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from iotpki.core.models import RevocationReason
from iotpki.core.publication import CrlPublisher
from iotpki.protocols.scep.client import CertRep, issuer_and_serial, open_envelope
from iotpki.protocols.scep.messages import FailInfo, MessageType, PkiStatus, sign_pki_message
from iotpki.server import Service, build_https_app
from iotpki.services.revocation import revocation_config
from iotpki.store.revocation import SqlRevocationStore
from scepapp import PKI, URL, Scep, running_scep
from scepkit import Device, rsa_key

from conftest import ManualClock


@pytest.fixture
def scep(tmp_path: Path, clock: ManualClock) -> Iterator[Scep]:
    with running_scep(tmp_path / "home", clock) as app:
        yield app


def _enroll(scep: Scep, device: Device) -> x509.Certificate:
    rep = scep.post(device.pkcs_req(scep.challenge(device.name), scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info
    return device.issued(rep, scep.clock.now())


def _failure(rep: CertRep, fail_info: FailInfo) -> None:
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is fail_info
    assert rep.envelope == b""


# -- GetCACaps and GetCACert ---------------------------------------------------------------------


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "iotpki.access"]


def test_get_ca_caps_lists_what_is_supported(scep: Scep, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="iotpki.access"):
        response = scep.http.get(URL, params={"operation": "GetCACaps"})
    assert response.status_code == 200
    caps = response.text.split()
    for cap in ("POSTPKIOperation", "SHA-256", "AES", "Renewal", "SCEPStandard"):
        assert cap in caps
    assert "DES3" not in caps and "SHA-1" not in caps
    # A read-only query is an access-log line, not an audit chain entry.
    assert any("GetCACaps" in line for line in _access_lines(caplog))
    assert not [e for e in scep.inst.store.audit_events() if e.action.startswith("scep.get_")]


def test_get_ca_cert_returns_ra_and_ca_chain(scep: Scep, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="iotpki.access"):
        response = scep.http.get(URL, params={"operation": "GetCACert"})
    assert response.headers["content-type"] == "application/x-x509-ca-ra-cert"
    ca = scep.inst.authority.chain("issuing")
    assert {c.subject for c in scep.chain} == {c.subject for c in ca}
    usage = scep.ra.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and usage.digital_signature
    assert isinstance(scep.ra.public_key(), rsa.RSAPublicKey)
    scep.ra.verify_directly_issued_by(ca[0])
    ra_serial = format(scep.ra.serial_number, "x")
    assert any(f"GetCACert issuing ra={ra_serial}" in line for line in _access_lines(caplog))
    assert not [e for e in scep.inst.store.audit_events() if e.action.startswith("scep.get_")]


def test_unknown_operation_is_400_and_audited(scep: Scep) -> None:
    response = scep.http.get(URL, params={"operation": "GetNextCACert"})
    assert response.status_code == 400
    assert scep.last_event("scep.refused")["code"] == "bad_request"


# -- PKCSReq ---------------------------------------------------------------------------------


def test_pkcsreq_with_challenge_issues_a_certificate_that_chains(scep: Scep) -> None:
    device = Device("dev-1", rsa_key(1))
    cert = _enroll(scep, device)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"
    assert cert.public_key() == device.key.public_key()
    cert.verify_directly_issued_by(scep.inst.authority.chain("issuing")[0])
    event = scep.last_event("scep.pki_operation")
    assert event["status"] == "success" and event["serial"] == format(cert.serial_number, "x")


def test_pkcsreq_by_get_with_base64_message(scep: Scep) -> None:
    device = Device("dev-get", rsa_key(2))
    der = device.pkcs_req(scep.challenge("dev-get"), scep.ra, scep.clock.now())
    # Unencoded '+' (a space once decoded) is tolerated, as some clients send it.
    message = base64.b64encode(der).decode()
    response = scep.http.get(f"{URL}?operation=PKIOperation&message={message}")
    rep = device.read(response.content, scep.ra, scep.clock.now())
    assert rep.status is PkiStatus.SUCCESS
    assert rep.recipient_nonce is not None


def test_repeated_transaction_gets_the_same_certificate_once(scep: Scep) -> None:
    device = Device("dev-2", rsa_key(3))
    der = device.pkcs_req(scep.challenge("dev-2"), scep.ra, scep.clock.now())
    first = device.issued(scep.post(der), scep.clock.now())
    again = device.issued(scep.post(der), scep.clock.now())
    assert first == again
    assert scep.issued_count() == 1


def test_challenge_password_is_single_use(scep: Scep) -> None:
    password = scep.challenge("dev-3")
    _ = scep.post(Device("dev-3", rsa_key(4)).pkcs_req(password, scep.ra, scep.clock.now()))
    rep = scep.post(Device("dev-3", rsa_key(5)).pkcs_req(password, scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_REQUEST)
    assert "used already" in str(scep.last_event("scep.pki_operation")["reason"])
    assert scep.issued_count() == 1


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_wrong_or_missing_challenge_is_refused(scep: Scep, password: str | None) -> None:
    scep.challenge("dev-4")
    rep = scep.post(Device("dev-4", rsa_key(6)).pkcs_req(password, scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_REQUEST)
    assert scep.last_event("scep.pki_operation")["fail_info"] == "badRequest"
    assert scep.issued_count() == 0


def test_expired_challenge_is_refused(scep: Scep) -> None:
    password = scep.challenge("dev-5", lifetime=timedelta(hours=1))
    scep.clock.advance(timedelta(hours=2))
    rep = scep.post(Device("dev-5", rsa_key(7)).pkcs_req(password, scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_REQUEST)
    assert scep.issued_count() == 0


def test_challenge_for_another_device_does_not_enroll_this_one(scep: Scep) -> None:
    password = scep.challenge("dev-6")
    rep = scep.post(Device("intruder", rsa_key(8)).pkcs_req(password, scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_REQUEST)
    assert scep.issued_count() == 0


# -- bad messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x82\x10\x00\x06\x09", bytes(2000)],
    ids=["empty", "garbage", "truncated-header", "zeros"],
)
def test_unparsable_messages_get_400_and_an_audit_event(scep: Scep, body: bytes) -> None:
    response = scep.http.post(URL, params=PKI, content=body)
    assert response.status_code == 400
    assert scep.last_event("scep.refused")["code"] == "malformed"


def test_truncated_pkcs7_gets_400(scep: Scep) -> None:
    der = Device("dev-t", rsa_key(9)).pkcs_req("x", scep.ra, scep.clock.now())
    response = scep.http.post(URL, params=PKI, content=der[: len(der) // 2])
    assert response.status_code == 400


def test_oversized_body_is_413(scep: Scep) -> None:
    response = scep.http.post(URL, params=PKI, content=bytes(65 * 1024))
    assert response.status_code == 413
    assert scep.last_event("scep.refused")["code"] == "too_large"


def test_bad_base64_message_is_400(scep: Scep) -> None:
    response = scep.http.get(URL, params={"operation": "PKIOperation", "message": "%%%"})
    assert response.status_code == 400


def test_signature_that_does_not_verify_is_bad_message_check(scep: Scep) -> None:
    device = Device("dev-7", rsa_key(10))
    der = bytearray(device.pkcs_req(scep.challenge("dev-7"), scep.ra, scep.clock.now()))
    der[-5] ^= 0x01  # the signature is the message's last field
    _failure(scep.post(bytes(der)), FailInfo.BAD_MESSAGE_CHECK)
    assert scep.last_event("scep.pki_operation")["reason"] == "the signature does not verify"
    assert scep.issued_count() == 0


def test_message_signed_by_a_key_other_than_the_certificates(scep: Scep) -> None:
    device = Device("dev-8", rsa_key(11))
    now = scep.clock.now()
    der = device.message(
        MessageType.PKCS_REQ, device.csr(scep.challenge("dev-8")), scep.ra, now, key=rsa_key(12)
    )
    _failure(scep.post(der), FailInfo.BAD_MESSAGE_CHECK)


def test_unsupported_digest_is_bad_alg(scep: Scep) -> None:
    device = Device("dev-9", rsa_key(13))
    signed = cms.ContentInfo.load(
        device.pkcs_req(scep.challenge("dev-9"), scep.ra, scep.clock.now())
    )
    signer_info = signed["content"]["signer_infos"][0]
    signer_info["digest_algorithm"] = {"algorithm": "md5"}
    _failure(scep.post(signed.dump(force=True)), FailInfo.BAD_ALG)


def test_unsupported_content_encryption_is_bad_alg(scep: Scep) -> None:
    device = Device("dev-10", rsa_key(14))
    now = scep.clock.now()
    der = device.pkcs_req(scep.challenge("dev-10"), scep.ra, now)
    message = cms.ContentInfo.load(der)
    envelope = cms.ContentInfo.load(message["content"]["encap_content_info"]["content"].native)
    envelope["content"]["encrypted_content_info"]["content_encryption_algorithm"] = {
        "algorithm": "aes128_ecb"
    }
    resigned = sign_pki_message(
        signer=device.self_signed(now),
        key=device.key,
        message_type=MessageType.PKCS_REQ,
        transaction_id=device.transaction_id,
        now=now,
        content=envelope.dump(force=True),
    )
    _failure(scep.post(resigned), FailInfo.BAD_ALG)


def test_envelope_to_another_recipient_is_bad_message_check(scep: Scep) -> None:
    device = Device("dev-11", rsa_key(15))
    stranger = Device("stranger", rsa_key(16))
    der = device.message(
        MessageType.PKCS_REQ,
        device.csr(scep.challenge("dev-11")),
        stranger.self_signed(scep.clock.now()),
        scep.clock.now(),
    )
    _failure(scep.post(der), FailInfo.BAD_MESSAGE_CHECK)


def test_signing_time_far_off_is_bad_time(scep: Scep) -> None:
    device = Device("dev-12", rsa_key(17))
    der = device.message(
        MessageType.PKCS_REQ,
        device.csr(scep.challenge("dev-12")),
        scep.ra,
        scep.clock.now() - timedelta(days=3),
    )
    _failure(scep.post(der), FailInfo.BAD_TIME)


def test_sender_nonce_reused_for_another_transaction(scep: Scep) -> None:
    now = scep.clock.now()
    first, second = Device("dev-13", rsa_key(18)), Device("dev-14", rsa_key(19))
    nonce = b"n" * 16
    ok = first.message(
        MessageType.PKCS_REQ, first.csr(scep.challenge("dev-13")), scep.ra, now, sender_nonce=nonce
    )
    assert scep.post(ok).status is PkiStatus.SUCCESS
    replay = second.message(
        MessageType.PKCS_REQ,
        second.csr(scep.challenge("dev-14")),
        scep.ra,
        now,
        sender_nonce=nonce,
    )
    _failure(scep.post(replay), FailInfo.BAD_REQUEST)


def test_transaction_id_of_another_key_is_refused(scep: Scep) -> None:
    first = Device("dev-15", rsa_key(20))
    _enroll(scep, first)
    other = Device("dev-16", rsa_key(21))
    der = other.message(
        MessageType.PKCS_REQ,
        other.csr(scep.challenge("dev-16")),
        scep.ra,
        scep.clock.now(),
        transaction_id=first.transaction_id,
    )
    _failure(scep.post(der), FailInfo.BAD_REQUEST)
    assert scep.issued_count() == 1


def test_csr_that_is_not_a_csr_is_bad_request(scep: Scep) -> None:
    device = Device("dev-17", rsa_key(22))
    der = device.message(MessageType.PKCS_REQ, b"\x30\x03\x02\x01\x00", scep.ra, scep.clock.now())
    _failure(scep.post(der), FailInfo.BAD_REQUEST)


def test_cert_rep_as_a_request_is_bad_request(scep: Scep) -> None:
    device = Device("dev-18", rsa_key(23))
    der = device.message(MessageType.CERT_REP, b"x", scep.ra, scep.clock.now())
    _failure(scep.post(der), FailInfo.BAD_REQUEST)


# -- RenewalReq --------------------------------------------------------------------------------


def test_renewal_signed_by_the_current_certificate(scep: Scep) -> None:
    device = Device("dev-20", rsa_key(24))
    old = _enroll(scep, device)
    rep = scep.post(device.renewal_req(scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info
    new = device.issued(rep, scep.clock.now())
    assert new.serial_number != old.serial_number and new.subject == old.subject
    assert scep.last_event("certificate.renewed")["renewed_from"] == format(old.serial_number, "x")


def test_renewal_signed_by_a_revoked_certificate_is_refused(scep: Scep) -> None:
    device = Device("dev-21", rsa_key(25))
    old = _enroll(scep, device)
    scep.inst.authority.revoke(
        format(old.serial_number, "x"), reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )
    _failure(scep.post(device.renewal_req(scep.ra, scep.clock.now())), FailInfo.BAD_REQUEST)
    assert "revoked" in str(scep.last_event("scep.pki_operation")["reason"])
    assert scep.issued_count() == 1


def test_renewal_signed_by_a_foreign_certificate_is_refused(scep: Scep) -> None:
    device = Device("dev-22", rsa_key(26))
    now = scep.clock.now()
    foreign_ca = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-22")])
    device.certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iotpki Issuing CA")]))
        .public_key(device.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(foreign_ca, hashes.SHA256())
    )
    _failure(scep.post(device.renewal_req(scep.ra, now)), FailInfo.BAD_REQUEST)
    assert "not issued by this CA" in str(scep.last_event("scep.pki_operation")["reason"])
    assert scep.issued_count() == 0


def test_renewal_after_expiry_is_refused(scep: Scep) -> None:
    device = Device("dev-23", rsa_key(27))
    _enroll(scep, device)
    scep.clock.advance(timedelta(days=31))
    _failure(scep.post(device.renewal_req(scep.ra, scep.clock.now())), FailInfo.BAD_REQUEST)
    assert "not valid now" in str(scep.last_event("scep.pki_operation")["reason"])


def test_pkcsreq_signed_by_current_certificate_renews(scep: Scep) -> None:
    """certmonger's way: a PKCSReq signed with the certificate it renews."""
    device = Device("dev-24", rsa_key(28))
    old = _enroll(scep, device)
    der = device.message(
        MessageType.PKCS_REQ, device.csr(None), scep.ra, scep.clock.now(), signer=old
    )
    rep = scep.post(der)
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info
    assert device.issued(rep, scep.clock.now()).serial_number != old.serial_number


# -- manual approval: PENDING and CertPoll -------------------------------------------------------


def _poll(scep: Scep, device: Device) -> CertRep:
    content = issuer_and_serial(scep.chain[0].subject, 1)
    return scep.post(device.message(MessageType.CERT_POLL, content, scep.ra, scep.clock.now()))


def test_pending_until_approved_then_certpoll_collects(tmp_path: Path, scep: Scep) -> None:
    device = Device("dev-30", rsa_key(29))
    password = scep.challenge("dev-30", approval=True)
    rep = scep.post(device.pkcs_req(password, scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.PENDING and rep.envelope == b""
    assert _poll(scep, device).status is PkiStatus.PENDING
    assert scep.issued_count() == 0
    token = _admin_token(scep)
    with TestClient(build_https_app(Service(scep.inst)), base_url="https://t") as api:
        listed = api.get("/api/v1/scep/transactions", params={"status": "pending"}, headers=token)
        assert [t["device_id"] for t in listed.json()["items"]] == ["dev-30"]
        done = api.post(
            f"/api/v1/scep/transactions/issuing/{device.transaction_id}/approve", headers=token
        )
        assert done.status_code == 200, done.text
    rep = _poll(scep, device)
    assert rep.status is PkiStatus.SUCCESS
    assert device.issued(rep, scep.clock.now()).public_key() == device.key.public_key()
    assert scep.issued_count() == 1


def test_rejected_request_polls_as_failure(scep: Scep) -> None:
    device = Device("dev-31", rsa_key(30))
    scep.post(device.pkcs_req(scep.challenge("dev-31", approval=True), scep.ra, scep.clock.now()))
    scep.service.decide("issuing", device.transaction_id, approve=False, actor="test")
    _failure(_poll(scep, device), FailInfo.BAD_REQUEST)
    assert scep.issued_count() == 0


def test_certpoll_for_unknown_transaction_is_bad_cert_id(scep: Scep) -> None:
    _failure(_poll(scep, Device("nobody", rsa_key(31))), FailInfo.BAD_CERT_ID)


# -- GetCert and GetCRL ------------------------------------------------------------------------


def test_get_cert_returns_an_issued_certificate(scep: Scep) -> None:
    holder = Device("dev-40", rsa_key(32))
    cert = _enroll(scep, holder)
    asker = Device("dev-41", rsa_key(33))
    content = issuer_and_serial(cert.issuer, cert.serial_number)
    rep = scep.post(asker.message(MessageType.GET_CERT, content, scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.SUCCESS
    assert asker.issued(rep, scep.clock.now()) == cert


def test_get_cert_for_unknown_serial_is_bad_cert_id(scep: Scep) -> None:
    asker = Device("dev-42", rsa_key(34))
    content = issuer_and_serial(scep.chain[0].subject, 12345)
    rep = scep.post(asker.message(MessageType.GET_CERT, content, scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_CERT_ID)


def test_get_cert_with_garbage_content_is_bad_request(scep: Scep) -> None:
    asker = Device("dev-43", rsa_key(35))
    rep = scep.post(asker.message(MessageType.GET_CERT, b"\x04\x01x", scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_REQUEST)


def test_get_crl_returns_the_published_crl(scep: Scep) -> None:
    device = Device("dev-44", rsa_key(36))
    cert = _enroll(scep, device)
    content = issuer_and_serial(cert.issuer, cert.serial_number)
    rep = scep.post(device.message(MessageType.GET_CRL, content, scep.ra, scep.clock.now()))
    _failure(rep, FailInfo.BAD_CERT_ID)  # nothing published yet
    publisher = CrlPublisher(
        scep.inst.authority,
        SqlRevocationStore(scep.inst.store),
        revocation_config(scep.inst.settings),
    )
    publisher.generate("issuing", "full", actor="test")
    rep = scep.post(device.message(MessageType.GET_CRL, content, scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.SUCCESS
    _, crls = open_envelope(rep.envelope, device.last_signer, device.key)  # type: ignore[arg-type]
    assert len(crls) == 1 and crls[0].issuer == cert.issuer


# -- admin API and store ---------------------------------------------------------------------


def _admin_token(scep: Scep) -> dict[str, str]:
    from iotpki.core.access import create_token
    from iotpki.core.models import Role

    token, _ = create_token(
        scep.inst.store, scep.inst.authority.clock, role=Role.ADMIN, description="", actor="test"
    )
    return {"Authorization": f"Bearer {token}"}


def test_admin_api_creates_a_challenge_that_enrolls(scep: Scep) -> None:
    with TestClient(build_https_app(Service(scep.inst)), base_url="https://t") as api:
        refused = api.post("/api/v1/scep/challenges", json={"device_id": "dev-50"})
        assert refused.status_code == 401
        made = api.post(
            "/api/v1/scep/challenges",
            json={"device_id": "dev-50", "expires": "2h"},
            headers=_admin_token(scep),
        )
        assert made.status_code == 201, made.text
        bad = api.post(
            "/api/v1/scep/challenges", json={"device_id": "bad id!"}, headers=_admin_token(scep)
        )
        assert bad.status_code == 400
    password = made.json()["challenge_password"]
    device = Device("dev-50", rsa_key(37))
    rep = scep.post(device.pkcs_req(password, scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.SUCCESS


def test_challenge_passwords_are_stored_hashed(scep: Scep) -> None:
    secret, record = scep.service.create_challenge("dev-51", actor="test")
    assert secret not in record.secret_hash
    assert scep.last_event("scep.challenge_created")["challenge"] == record.challenge_id


# -- hostile input -------------------------------------------------------------------------------


def test_mutated_messages_never_get_a_server_error(scep: Scep) -> None:
    """Deterministic mutations of valid messages: always a CertRep or a 4xx, never a 500."""
    rng = random.Random(8894)
    device = Device("fuzz", rsa_key(43))
    now = scep.clock.now()
    seeds = [
        device.pkcs_req("pw", scep.ra, now),
        device.message(MessageType.GET_CERT, issuer_and_serial(scep.ra.issuer, 5), scep.ra, now),
    ]
    for round_ in range(80):
        message = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(message))
            if rng.random() < 0.6:
                message[position] = rng.randrange(256)
            else:
                del message[position : position + rng.randint(1, 16)]
        response = scep.http.post(URL, params=PKI, content=bytes(message))
        assert response.status_code in (200, 400), (round_, response.text)
    csr = bytearray(device.csr("pw"))
    for round_ in range(20):
        broken = bytearray(csr)
        broken[rng.randrange(len(broken))] = rng.randrange(256)
        der = device.message(
            MessageType.PKCS_REQ, bytes(broken), scep.ra, now, transaction_id=f"f{round_}"
        )
        rep = scep.post(der)
        assert rep.status is PkiStatus.FAILURE
    assert scep.issued_count() == 0
