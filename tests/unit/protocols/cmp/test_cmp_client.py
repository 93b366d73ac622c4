"""The device's CMP key update against the responder, in process: kur signed with the current
key, kup read and checked; refusals and answers that are not the CA's."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from iotpki.core.models import RevocationReason
from iotpki.errors import AuthError
from iotpki.protocols.cmp import CmpResponder, Signers
from iotpki.protocols.cmp.client import CmpRejected, key_update, read_key_update
from iotpki.server import enrollment
from iotpki.services.installation import Installation

from conftest import device_csr


def _responder(inst: Installation) -> CmpResponder:
    return CmpResponder(
        enrollment(inst), inst.store, Signers(inst.authority, inst.store, inst.keys["file"])
    )


def _device(inst: Installation) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = inst.authority.issue(
        device_csr("dev-1", key), profile="device", device_id="dev-1", actor="test"
    )
    return key, issued.certificate


def _trusted(inst: Installation) -> list[x509.Certificate]:
    return inst.authority.ca_certificates(inst.authority.default_issuing_ca())


def test_key_update_renews_with_a_new_key(inst: Installation) -> None:
    key, cert = _device(inst)
    new_key = ec.generate_private_key(ec.SECP384R1())
    sent = key_update(cert, key, new_key, inst.authority.clock.now())
    answer = _responder(inst).handle(sent.der, None, "test")
    renewed, implicit = read_key_update(answer, sent, _trusted(inst))
    assert implicit
    assert renewed.public_key() == new_key.public_key()
    assert renewed.subject == cert.subject
    assert inst.authority.get(format(renewed.serial_number, "x")).device_id == "dev-1"


def test_a_revoked_certificate_is_rejected(inst: Installation) -> None:
    key, cert = _device(inst)
    inst.authority.revoke(
        format(cert.serial_number, "x"), reason=RevocationReason.SUPERSEDED, actor="t"
    )
    sent = key_update(
        cert, key, ec.generate_private_key(ec.SECP256R1()), inst.authority.clock.now()
    )
    with pytest.raises(CmpRejected):
        read_key_update(_responder(inst).handle(sent.der, None, "test"), sent, _trusted(inst))


def test_an_answer_for_another_request_or_from_another_ca_is_refused(inst: Installation) -> None:
    key, cert = _device(inst)
    sent = key_update(
        cert, key, ec.generate_private_key(ec.SECP256R1()), inst.authority.clock.now()
    )
    answer = _responder(inst).handle(sent.der, None, "test")
    other = key_update(
        cert, key, ec.generate_private_key(ec.SECP256R1()), inst.authority.clock.now()
    )
    with pytest.raises(AuthError, match="not for this request"):
        read_key_update(answer, other, _trusted(inst))
    with pytest.raises(AuthError, match="not certified"):
        read_key_update(answer, sent, [])
