"""pkiMessage codec: attribute encoding, round trip, verification and malformed messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms

from iotpki.errors import MalformedInput
from iotpki.protocols.scep.messages import (
    FailInfo,
    MessageType,
    PkiStatus,
    ScepFailure,
    build_cert_rep,
    parse_pki_message,
    sign_pki_message,
)
from scepkit import Device, rsa_key

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TOLERANCE = timedelta(hours=1)


@pytest.fixture(scope="module")
def device() -> Device:
    return Device("dev-1", rsa_key(0))


def _message(device: Device, **changes: object) -> bytes:
    options: dict[str, object] = {
        "signer": device.self_signed(NOW),
        "key": device.key,
        "message_type": MessageType.PKCS_REQ,
        "transaction_id": "tx-1",
        "now": NOW,
        "content": b"envelope",
        "sender_nonce": b"\x01" * 16,
    }
    options.update(changes)
    return sign_pki_message(**options)  # type: ignore[arg-type]


def test_fail_info_codes_are_rfc_8894_values() -> None:
    assert [f.code for f in FailInfo] == ["0", "1", "2", "3", "4"]
    assert [str(s) for s in PkiStatus] == ["0", "2", "3"]
    assert [int(m) for m in MessageType] == [3, 17, 19, 20, 21, 22]


def test_round_trip_and_verify(device: Device) -> None:
    message = parse_pki_message(_message(device))
    assert message.message_type == MessageType.PKCS_REQ
    assert message.transaction_id == "tx-1"
    assert message.sender_nonce == b"\x01" * 16
    assert message.content == b"envelope"
    assert message.signing_time == NOW
    assert message.signer == device.self_signed(NOW)
    message.verify(NOW, TOLERANCE)


def test_signed_attributes_are_a_sorted_der_set(device: Device) -> None:
    message = parse_pki_message(_message(device))
    attributes = cms.CMSAttributes.load(message.signed_attributes)
    encoded = [a.dump() for a in attributes]
    assert encoded == sorted(encoded)
    assert message.signed_attributes[0] == 0x31


def test_cert_rep_carries_status_fail_info_and_nonces(device: Device) -> None:
    der = build_cert_rep(
        signer=device.self_signed(NOW),
        key=device.key,
        transaction_id="tx-1",
        recipient_nonce=b"\x02" * 16,
        status=PkiStatus.FAILURE,
        fail_info=FailInfo.BAD_TIME,
        now=NOW,
        digest_algorithm="sha1",
    )
    rep = parse_pki_message(der)
    assert rep.message_type == MessageType.CERT_REP
    assert (rep.pki_status, rep.fail_info) == ("2", "3")
    assert rep.recipient_nonce == b"\x02" * 16
    assert rep.sender_nonce != b"\x02" * 16 and len(rep.sender_nonce) == 16
    assert rep.digest_algorithm == "sha256"  # never answers with SHA-1
    assert rep.content == b""
    rep.verify(NOW, TOLERANCE)


def test_sha1_requests_are_accepted(device: Device) -> None:
    parse_pki_message(_message(device, digest_algorithm="sha1")).verify(NOW, TOLERANCE)


def test_wrong_key_is_bad_message_check(device: Device) -> None:
    message = parse_pki_message(_message(device, key=rsa_key(1)))
    with pytest.raises(ScepFailure) as caught:
        message.verify(NOW, TOLERANCE)
    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_content_changed_after_signing_is_bad_message_check(device: Device) -> None:
    info = cms.ContentInfo.load(_message(device))
    info["content"]["encap_content_info"]["content"] = b"other"
    message = parse_pki_message(info.dump(force=True))
    with pytest.raises(ScepFailure) as caught:
        message.verify(NOW, TOLERANCE)
    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_signing_time_outside_tolerance_is_bad_time(device: Device) -> None:
    message = parse_pki_message(_message(device, now=NOW - timedelta(hours=2)))
    with pytest.raises(ScepFailure) as caught:
        message.verify(NOW, TOLERANCE)
    assert caught.value.fail_info is FailInfo.BAD_TIME


@pytest.mark.parametrize("algorithm", ["md5", "sha224"])
def test_other_digests_are_bad_alg(device: Device, algorithm: str) -> None:
    info = cms.ContentInfo.load(_message(device))
    info["content"]["signer_infos"][0]["digest_algorithm"] = {"algorithm": algorithm}
    message = parse_pki_message(info.dump(force=True))
    with pytest.raises(ScepFailure) as caught:
        message.verify(NOW, TOLERANCE)
    assert caught.value.fail_info is FailInfo.BAD_ALG


@pytest.mark.parametrize(
    "changes",
    [
        {"transaction_id": ""},
        {"transaction_id": "x" * 129},
        {"sender_nonce": b"\x01" * 4},
    ],
    ids=["empty-transaction", "long-transaction", "short-nonce"],
)
def test_bad_attributes_are_malformed(device: Device, changes: dict[str, object]) -> None:
    with pytest.raises(MalformedInput):
        parse_pki_message(_message(device, **changes))


def test_missing_signer_certificate_is_malformed(device: Device) -> None:
    info = cms.ContentInfo.load(_message(device))
    info["content"]["certificates"] = []
    with pytest.raises(MalformedInput):
        parse_pki_message(info.dump(force=True))


def test_not_signed_data_is_malformed(device: Device) -> None:
    data = cms.ContentInfo({"content_type": "data", "content": b"x"}).dump()
    with pytest.raises(MalformedInput):
        parse_pki_message(data)


@pytest.mark.parametrize("cut", [1, 10, 100, 500])
def test_truncated_messages_are_malformed(device: Device, cut: int) -> None:
    with pytest.raises(MalformedInput):
        parse_pki_message(_message(device)[:-cut])


@pytest.mark.parametrize("status", [PkiStatus.FAILURE, PkiStatus.PENDING])
def test_failure_and_pending_carry_an_empty_econtent_of_type_data(
    device: Device, status: PkiStatus
) -> None:
    """RFC 8894 section 3.3.2: the signed content is present, a zero-length OCTET STRING
    (OpenSSL refuses a SignedData without it: "PKCS7 routines::no content")."""
    der = build_cert_rep(
        signer=device.self_signed(NOW),
        key=device.key,
        transaction_id="tx-1",
        recipient_nonce=b"\x02" * 16,
        status=status,
        fail_info=FailInfo.BAD_REQUEST if status is PkiStatus.FAILURE else None,
        now=NOW,
    )
    encapsulated = cms.ContentInfo.load(der)["content"]["encap_content_info"]
    assert encapsulated["content_type"].native == "data"
    assert encapsulated["content"].native == b""
    assert encapsulated["content"].dump() == b"\xa0\x02\x04\x00"
