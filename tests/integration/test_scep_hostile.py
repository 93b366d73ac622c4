"""SCEP under hostile input (issue 13): malformed pkiMessages get a CertRep FAILURE or a 400,
with an audit event and no change of state; never a 500."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotpki.protocols.scep.messages import FailInfo, MessageType, PkiStatus
from scepapp import PKI, URL, Scep, running_scep
from scepkit import (
    OID_MESSAGE_TYPE,
    OID_SENDER_NONCE,
    OID_SIGNING_TIME,
    OID_TRANSACTION_ID,
    Device,
    Parts,
    assemble,
    duplicated_rdn_certificate,
    rsa_key,
    seal,
)

from conftest import ManualClock


@pytest.fixture
def scep(tmp_path: Path, clock: ManualClock) -> Iterator[Scep]:
    with running_scep(tmp_path / "home", clock) as app:
        yield app


def _pkcs_req_parts(scep: Scep, device: Device, password: str | None = "pw") -> Parts:
    """The parts of a valid PKCSReq of ``device`` (encrypted to the RA)."""
    now = scep.clock.now()
    envelope = seal(device.csr(password), scep.ra)
    return Parts.of(
        device.self_signed(now), MessageType.PKCS_REQ, device.transaction_id, envelope, now
    )


def _state(scep: Scep) -> tuple[int, int]:
    """What a refused request must leave unchanged: certificates and SCEP transactions."""
    return scep.issued_count(), len(scep.service.transactions(limit=1000))


def _get(scep: Scep, der: bytes) -> tuple[int, bytes]:
    message = base64.b64encode(der).decode()
    response = scep.http.get(URL, params={"operation": "PKIOperation", "message": message})
    return response.status_code, response.content


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_signer_with_a_duplicated_rdn_attribute_is_bad_message_check(
    scep: Scep, method: str
) -> None:
    """Issue 13: "duplicate attributes are not allowed" escaped as a 500 at first use."""
    device = Device("dup-rdn", rsa_key(60))
    parts = _pkcs_req_parts(scep, device, scep.challenge("dup-rdn"))
    certificate, sid = duplicated_rdn_certificate(device.self_signed(scep.clock.now()))
    parts.certificates, parts.sid = [certificate], sid
    der = assemble(parts, device.key)
    before = _state(scep)
    if method == "GET":
        status, body = _get(scep, der)
        assert status == 200, body
        rep = Device("reader", rsa_key(0)).read(body, scep.ra, scep.clock.now())
    else:
        rep = scep.post(der)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK
    assert rep.transaction_id == device.transaction_id
    event = scep.last_event("scep.pki_operation")
    assert event["fail_info"] == "badMessageCheck" and event["status"] == "failure"
    assert _state(scep) == before


@pytest.mark.parametrize(
    "oid",
    [OID_SIGNING_TIME, OID_MESSAGE_TYPE],
    ids=["signingTime", "messageType"],
)
def test_a_signed_attribute_given_twice_gets_a_cert_rep_failure(scep: Scep, oid: str) -> None:
    device = Device("dup-attr", rsa_key(61))
    parts = _pkcs_req_parts(scep, device, scep.challenge("dup-attr"))
    parts.attributes += [a for a in parts.attributes if a[0] == oid]
    before = _state(scep)
    rep = scep.post(assemble(parts, device.key))
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK
    assert "twice" in str(scep.last_event("scep.pki_operation")["reason"])
    assert _state(scep) == before


@pytest.mark.parametrize("oid", [OID_TRANSACTION_ID, OID_SENDER_NONCE])
def test_no_cert_rep_without_one_transaction_id_and_nonce(scep: Scep, oid: str) -> None:
    """No CertRep can answer without them (RFC 8894 section 3.3.2): HTTP 400, audited."""
    device = Device("dup-id", rsa_key(62))
    parts = _pkcs_req_parts(scep, device)
    parts.attributes += [a for a in parts.attributes if a[0] == oid]
    response = scep.http.post(URL, params=PKI, content=assemble(parts, device.key))
    assert response.status_code == 400
    assert "twice" in response.text
    assert scep.last_event("scep.refused")["code"] == "malformed"


def test_message_type_that_is_not_a_number_is_bad_request(scep: Scep) -> None:
    device = Device("bad-type", rsa_key(63))
    parts = _pkcs_req_parts(scep, device)
    parts.attributes = [
        (oid, [b"\x13\x03abc"] if oid == OID_MESSAGE_TYPE else values)
        for oid, values in parts.attributes
    ]
    rep = scep.post(assemble(parts, device.key))
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
