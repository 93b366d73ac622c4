"""The AK CA end to end with a real software TPM: EK certificate from swtpm's manufacturer CA,
MakeCredential in Python, TPM2_ActivateCredential in swtpm, the AK certificate from the
authority, then a device-attest-01 statement that verifies against the installation's root."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

pytest.importorskip("tpm2_pytss")

from iotpki.core.akca import (
    AK_PROFILE,
    AttestationKeyCA,
    ak_certificate_decision,
    make_credential,
)
from iotpki.core.attestation import (
    ek_permanent_identifier,
    parse_attestation_object,
    verify_tpm_statement,
)
from iotpki.core.models import KeyAlgorithm
from iotpki.errors import AttestationRejected
from iotpki.keys.tpm import TpmBackend
from iotpki.services.installation import Installation
from iotpki.store.sql import SqlStore

from conftest import ManualClock
from tpm import SoftwareTpm, require_swtpm, start_swtpm
from tpm import manufactured_tpm as manufactured_tpm

SECRET = b"k" * 32


@pytest.fixture
def spent(tmp_path: Path) -> SqlStore:
    """The record of activated challenges, on a database of its own."""
    store = SqlStore(f"sqlite:///{tmp_path / 'spent.db'}")
    store.migrate()
    return store


@pytest.fixture
def swtpm_backend(
    manufactured_tpm: object, tmp_path: Path
) -> Iterator[tuple[SoftwareTpm, TpmBackend]]:
    require_swtpm()
    tpm = start_swtpm(manufactured_tpm, tmp_path)  # type: ignore[arg-type]
    backend = TpmBackend(tpm.tcti, tmp_path / "keys")
    try:
        yield tpm, backend
    finally:
        backend.close()
        tpm.stop()


def _ek_chain(tpm: SoftwareTpm, backend: TpmBackend) -> list[x509.Certificate]:
    return [backend.endorsement_certificate(), tpm.manufactured.manufacturer_issuer]


def test_ak_enrollment_then_device_attest(
    spent: SqlStore,
    inst: Installation,
    clock: ManualClock,
    swtpm_backend: tuple[SoftwareTpm, TpmBackend],
) -> None:
    tpm, backend = swtpm_backend
    akca = AttestationKeyCA(
        ek_roots=[tpm.manufactured.manufacturer_root], secret_key=SECRET, clock=clock, spent=spent
    )
    ak = backend.create_attestation_key("ak")
    ek_chain = _ek_chain(tpm, backend)
    challenge = akca.challenge(ek_chain, backend.public_area(ak))
    secret = backend.activate_credential(ak, challenge.credential_blob, challenge.encrypted_secret)
    activated = akca.activate(
        ek_chain, backend.public_area(ak), challenge.nonce, challenge.issued_at, secret
    )
    assert activated.permanent_identifier == ek_permanent_identifier(ek_chain[0].public_key())
    with pytest.raises(AttestationRejected, match="already used") as replayed:
        akca.activate(  # one activation per challenge, on whichever replica
            ek_chain, backend.public_area(ak), challenge.nonce, challenge.issued_at, secret
        )
    assert replayed.value.data["check"] == "activation_replayed"

    issued = inst.authority.issue_attestation_key(
        activated.ak.public_key,
        ak_certificate_decision(activated, clock.now()),
        AK_PROFILE,
        actor="test",
    )
    assert issued.record.profile == "attestation-key"

    key = backend.generate("device", KeyAlgorithm.P256)
    att_obj = backend.attestation_object(key, ak, list(issued.chain), "tok.thumb")
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    attested = verify_tpm_statement(
        parse_attestation_object(att_obj),
        key_authorization="tok.thumb",
        roots=[root],
        at=clock.now(),
    )
    assert attested.identifies("permanent-identifier", activated.permanent_identifier)
    assert attested.public_key == backend.public_key(key)


def test_wrong_secret_is_refused(
    spent: SqlStore, clock: ManualClock, swtpm_backend: tuple[SoftwareTpm, TpmBackend]
) -> None:
    tpm, backend = swtpm_backend
    akca = AttestationKeyCA(
        ek_roots=[tpm.manufactured.manufacturer_root], secret_key=SECRET, clock=clock, spent=spent
    )
    ak = backend.create_attestation_key("ak")
    ek_chain = _ek_chain(tpm, backend)
    challenge = akca.challenge(ek_chain, backend.public_area(ak))
    with pytest.raises(AttestationRejected) as info:
        akca.activate(
            ek_chain, backend.public_area(ak), challenge.nonce, challenge.issued_at, b"\x00" * 32
        )
    assert info.value.data["check"] == "activation"


def test_ak_in_another_tpm_cannot_activate(
    clock: ManualClock, swtpm_backend: tuple[SoftwareTpm, TpmBackend]
) -> None:
    """A credential sealed to an AK name the TPM does not hold is not released."""
    _tpm, backend = swtpm_backend
    ak = backend.create_attestation_key("ak")
    other = backend.create_attestation_key("other-ak")
    ek = backend.endorsement_certificate().public_key()
    from iotpki.core.attestation import parse_public_area

    blob, secret = make_credential(
        ek, parse_public_area(backend.public_area(other)).name, b"s" * 32
    )  # type: ignore[arg-type]
    with pytest.raises(Exception, match="activating"):
        backend.activate_credential(ak, blob, secret)


def test_expired_challenge_is_refused(
    spent: SqlStore, clock: ManualClock, swtpm_backend: tuple[SoftwareTpm, TpmBackend]
) -> None:
    tpm, backend = swtpm_backend
    akca = AttestationKeyCA(
        ek_roots=[tpm.manufactured.manufacturer_root], secret_key=SECRET, clock=clock, spent=spent
    )
    ak = backend.create_attestation_key("ak")
    ek_chain = _ek_chain(tpm, backend)
    challenge = akca.challenge(ek_chain, backend.public_area(ak))
    secret = backend.activate_credential(ak, challenge.credential_blob, challenge.encrypted_secret)
    clock.advance(timedelta(minutes=11))
    with pytest.raises(AttestationRejected) as info:
        akca.activate(
            ek_chain, backend.public_area(ak), challenge.nonce, challenge.issued_at, secret
        )
    assert info.value.data["check"] == "activation_expired"


def test_untrusted_ek_root_is_refused(
    spent: SqlStore,
    inst: Installation,
    clock: ManualClock,
    swtpm_backend: tuple[SoftwareTpm, TpmBackend],
) -> None:
    tpm, backend = swtpm_backend
    stranger_root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    akca = AttestationKeyCA(ek_roots=[stranger_root], secret_key=SECRET, clock=clock, spent=spent)
    ak = backend.create_attestation_key("ak")
    with pytest.raises(AttestationRejected) as info:
        akca.challenge(_ek_chain(tpm, backend), backend.public_area(ak))
    assert info.value.data["check"] == "ek_chain"


def test_unrestricted_key_is_not_an_ak(
    spent: SqlStore, clock: ManualClock, swtpm_backend: tuple[SoftwareTpm, TpmBackend]
) -> None:
    tpm, backend = swtpm_backend
    akca = AttestationKeyCA(
        ek_roots=[tpm.manufactured.manufacturer_root], secret_key=SECRET, clock=clock, spent=spent
    )
    key = backend.generate("device", KeyAlgorithm.P256)
    with pytest.raises(AttestationRejected) as info:
        akca.challenge(_ek_chain(tpm, backend), backend.public_area(key))
    assert info.value.data["check"] == "ak_attributes"
