"""Signed device messages end to end: keys and certificates from a real Authority, CRLs from
the real publication, and each refusal the verifier must name."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from channelkit import Issuance, issue, publish_crls
from iotpki.core.models import KeyAlgorithm, RevocationReason
from iotpki.errors import PeerRefused
from iotpki.messages import MessageSigner, MessageVerifier
from iotpki.messages.cose import decode_sign1, encode_sign1
from iotpki.net.revocation_check import CrlCache, RevocationChecker
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation


def _anchors(inst: Installation) -> list[x509.Certificate]:
    return [c.certificate for c in inst.authority.list_cas() if c.kind == "root"]


def _verifier(inst: Installation, clock: ManualClock) -> MessageVerifier:
    cas = [c.certificate for c in inst.authority.list_cas() if c.certificate_der]
    crls = CrlCache(issuers=lambda: cas, directories=[inst.home / "crl"], poll_seconds=0)
    return MessageVerifier(lambda: _anchors(inst), revocation=RevocationChecker(crls), clock=clock)


def _signer(device: Issuance, clock: ManualClock, include_chain: bool = True) -> MessageSigner:
    return MessageSigner(device.key, device.issued.chain, include_chain=include_chain, clock=clock)


def _refused(verifier: MessageVerifier, data: bytes) -> str:
    with pytest.raises(PeerRefused) as refused:
        verifier.verify(data)
    return refused.value.reason


@pytest.fixture
def device(inst: Installation, tmp_path: Path) -> Issuance:
    publish_crls(inst)
    return issue(inst, tmp_path / "dev", "meter-1")


def test_signed_telemetry_verifies_with_x5chain_then_kid(
    inst: Installation, device: Issuance, clock: ManualClock
) -> None:
    verifier = _verifier(inst, clock)
    message = verifier.verify(_signer(device, clock).sign(b'{"t": 21.5}'))
    assert (message.device_id, message.payload) == ("meter-1", b'{"t": 21.5}')
    by_kid = _signer(device, clock, include_chain=False).sign(b"{}")
    assert decode_sign1(by_kid).unprotected.keys() == {4}
    assert verifier.verify(by_kid).device_id == "meter-1"
    assert _refused(_verifier(inst, clock), by_kid) == "unknown_kid"  # a verifier that never saw it


def test_replayed_and_stale_messages_refused(
    inst: Installation, device: Issuance, clock: ManualClock
) -> None:
    verifier = _verifier(inst, clock)
    data = _signer(device, clock).sign(b"1")
    verifier.verify(data)
    assert _refused(verifier, data) == "replay"
    old = _signer(device, clock).sign(b"2")
    clock.advance(timedelta(minutes=10))
    assert _refused(verifier, old) == "stale"


def test_bad_signature_and_stripped_or_foreign_chain_refused(
    inst: Installation, device: Issuance, clock: ManualClock, tmp_path: Path
) -> None:
    verifier = _verifier(inst, clock)
    message = decode_sign1(_signer(device, clock).sign(b"payload"))
    forged = encode_sign1(
        message.protected_bytes, message.unprotected, b"tampered", message.signature
    )
    assert _refused(verifier, forged) == "bad_signature"
    stripped = encode_sign1(message.protected_bytes, {}, message.payload, message.signature)
    assert _refused(verifier, stripped) == "no_chain"
    only_leaf = encode_sign1(
        message.protected_bytes,
        {33: message.unprotected[33][0]},
        message.payload,
        message.signature,
    )
    assert _refused(verifier, only_leaf) == "foreign_chain"  # the issuing CA is missing
    other = make_installation(tmp_path / "other")
    try:
        foreign = issue(other, tmp_path / "foreign", "meter-1")
        assert _refused(verifier, _signer(foreign, clock).sign(b"x")) == "foreign_chain"
    finally:
        other.close()
    assert _refused(verifier, cbor2.dumps([1, 2, 3])) == "malformed"


def test_someone_elses_chain_does_not_verify(
    inst: Installation, device: Issuance, clock: ManualClock, tmp_path: Path
) -> None:
    other_device = issue(inst, tmp_path / "other-dev", "meter-2")
    message = decode_sign1(_signer(device, clock).sign(b"x"))
    swapped = encode_sign1(
        message.protected_bytes,
        {33: [c.public_bytes(Encoding.DER) for c in other_device.issued.chain]},
        message.payload,
        message.signature,
    )
    assert _refused(_verifier(inst, clock), swapped) == "bad_signature"


def test_revoked_and_expired_signers_refused(
    inst: Installation, device: Issuance, clock: ManualClock, tmp_path: Path
) -> None:
    verifier = _verifier(inst, clock)
    verifier.verify(_signer(device, clock).sign(b"before"))
    inst.authority.revoke(
        device.issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )
    publish_crls(inst)
    assert _refused(verifier, _signer(device, clock).sign(b"after")) == "revoked"
    short = issue(inst, tmp_path / "short", "meter-3", lifetime=timedelta(hours=1))
    data = _signer(short, clock).sign(b"x")
    clock.advance(timedelta(hours=2))
    assert _refused(verifier, data) == "expired"


def test_token_key_signs_messages(inst: Installation, clock: ManualClock, tmp_path: Path) -> None:
    from iotpki.keys.pkcs11 import Pkcs11Backend

    from softhsm import softhsm_token

    module, label, pin = softhsm_token(tmp_path)
    publish_crls(inst)
    with Pkcs11Backend(module, label, pin) as token:
        key = token.signer(token.generate("meter-hsm", KeyAlgorithm.P256))
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meter-hsm")]))
            .sign(key, hashes.SHA256())
        )
        issued = inst.authority.issue(csr, profile="device", actor="test")
        signer = MessageSigner(key, issued.chain, clock=clock)
        message = _verifier(inst, clock).verify(signer.sign(b"from the token"))
    assert message.device_id == "meter-hsm"
