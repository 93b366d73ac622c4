"""ACME device-attest-01 (draft-ietf-acme-device-attest): a device proves, with a TPM
attestation statement, that the key it will put in its CSR was generated in a genuine TPM.

draft-ietf-acme-device-attest section 3: ``permanent-identifier`` (RFC 4043) and
``hardware-module`` (RFC 4108) identifiers are offered this challenge. Section 5: the client
answers with ``{"attObj": base64url(CBOR attestation object)}`` whose statement is bound to the
challenge by the key authorization (here: certInfo.extraData = SHA-256(key authorization));
the server verifies the statement (:mod:`iotpki.core.attestation`), that the attestation key's
certificate names the identifier, and at finalize that the CSR carries the attested key.

Verification needs no network, so the challenge is decided within the POST that answers it and
the reply already shows ``valid`` or ``invalid`` with a ``badAttestationStatement`` error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotpki.core.acme_ports import AcmeAuthorization, AcmeChallenge, AcmeOrder, AcmeTransaction
from iotpki.core.attestation import (
    AttestedKey,
    parse_attestation_object,
    verify_tpm_statement,
)
from iotpki.core.authenticators.acme_account import DEVICE_IDENTIFIERS
from iotpki.core.keytypes import key_fingerprint
from iotpki.core.models import KeyAttestation
from iotpki.errors import AttestationRejected
from iotpki.protocols.acme import jws, messages
from iotpki.protocols.acme.authorizations import record_outcome
from iotpki.protocols.acme.context import AcmeContext
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "CHALLENGE_TYPE",
    "DEVICE_IDENTIFIERS",
    "answer",
    "challenge_types",
    "order_attestation",
    "precheck",
    "validate",
]

CHALLENGE_TYPE = "device-attest-01"
_MAX_ATT_OBJ = 32 * 1024
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def challenge_types(ctx: AcmeContext, identifier_type: str) -> tuple[str, ...]:
    """The challenges offered for an identifier type: device-attest-01 for device identifiers
    once attestation roots are trusted, else the RFC 8555 ones."""
    if identifier_type in DEVICE_IDENTIFIERS and ctx.attestation_roots():
        return (CHALLENGE_TYPE,)
    return messages.CHALLENGE_TYPES[identifier_type]


def answer(signed: jws.SignedRequest) -> bytes | None:
    """Section 5: the ``attObj`` of a challenge response, or None when the payload has none."""
    if signed.is_post_as_get:
        return None
    value = signed.json_payload().get("attObj")
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or len(value) > _MAX_ATT_OBJ * 4 // 3 + 4
        or not _BASE64URL.match(value)
    ):
        raise AcmeProblem("malformed", "attObj must be unpadded base64url of at most 32 KiB")
    return jws.b64url_decode(value)


def precheck(att_obj: bytes | None) -> Callable[[AcmeChallenge], None]:
    """A check run before a challenge starts: device-attest-01 needs an ``attObj``."""

    def check(challenge: AcmeChallenge) -> None:
        if challenge.type == CHALLENGE_TYPE and att_obj is None:
            raise AcmeProblem(
                "malformed", 'device-attest-01 is answered with {"attObj": base64url(CBOR)}'
            )

    return check


def _record_of(attested: AttestedKey, identifier: str, now: datetime) -> KeyAttestation:
    """What the store keeps of a verified statement."""
    ak_cert = attested.ak_chain[0]
    der = serialization.Encoding.DER
    return KeyAttestation(
        key_fingerprint=key_fingerprint(attested.public_key),
        method="tpm",
        attested_at=now,
        device_identity=identifier,
        ak_fingerprint=hashlib.sha256(ak_cert.public_bytes(der)).hexdigest(),
        ak_issuer=ak_cert.issuer.rfc4514_string()[:512],
        root_fingerprint=hashlib.sha256(attested.root.public_bytes(der)).hexdigest(),
        root_subject=attested.root.subject.rfc4514_string()[:512],
    )


def _verify(
    ctx: AcmeContext, authz: AcmeAuthorization, key_authorization: str, att_obj: bytes
) -> AttestedKey:
    """Every check of the statement, and that its AK certificate names the identifier."""
    statement = parse_attestation_object(att_obj)
    try:
        attested = verify_tpm_statement(
            statement,
            key_authorization=key_authorization,
            roots=list(ctx.attestation_roots()),
            at=ctx.now(),
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # e.g. an AK key of no known type
        raise AttestationRejected(
            f"the statement cannot be verified: {exc}", check="structure"
        ) from exc
    kind, value = authz.identifier
    # Section 5: the attestation must identify the device the order names.
    if not attested.identifies(kind, value):
        raise AttestationRejected(
            f"the attestation-key certificate does not name {kind} {value}", check="identifier"
        )
    return attested


def validate(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    key_authorization: str,
    att_obj: bytes,
    base: str,
) -> dict[str, Any]:
    """Decide a device-attest-01 challenge that entered ``processing``, record the outcome and
    return the challenge as it now is (section 7.5.1: its ``error`` says why it failed)."""
    identifier = f"{authz.identifier[0]}:{authz.identifier[1]}"
    actor = f"acme:{authz.account_id}"
    try:
        attested = _verify(ctx, authz, key_authorization, att_obj)
    except AttestationRejected as exc:
        check = str(exc.data.get("check", "statement"))
        detail = exc.message
        problem = AcmeProblem("badAttestationStatement", detail)

        def refused(tx: AcmeTransaction) -> None:
            tx.append_audit(
                ctx.now(),
                actor,
                "acme.device_attest.refused",
                authz.authz_id,
                {"identifier": identifier, "check": check, "detail": detail[:256]},
            )

        record_outcome(ctx, challenge, authz, problem, refused)
        return _challenge_json(ctx, challenge, base)
    record = _record_of(attested, identifier, ctx.now())
    spki = attested.public_key.public_bytes(*_SPKI)

    def accepted(tx: AcmeTransaction) -> None:
        tx.add_pending_attestation(authz.authz_id, authz.order_id, spki, record)
        tx.append_audit(
            ctx.now(),
            actor,
            "acme.device_attest.verified",
            authz.authz_id,
            {
                "identifier": identifier,
                "key": record.key_fingerprint,
                "ak": record.ak_fingerprint,
                "root": record.root_subject,
            },
        )

    record_outcome(ctx, challenge, authz, None, accepted)
    return _challenge_json(ctx, challenge, base)


def _challenge_json(ctx: AcmeContext, challenge: AcmeChallenge, base: str) -> dict[str, Any]:
    with ctx.store.transaction(readonly=True) as tx:
        current = tx.get_challenge(challenge.challenge_id) or challenge
    return messages.challenge_json(current, base)


def order_attestation(
    tx: AcmeTransaction, order: AcmeOrder
) -> tuple[CertificatePublicKeyTypes, KeyAttestation] | None:
    """At finalize: the key the TPM attested for the order and its attestation record (the
    authenticator checks that the CSR carries that key, section 5); None for an order without
    device-attest-01 (only device identifiers are attested)."""
    if not any(kind in DEVICE_IDENTIFIERS for kind, _ in order.identifiers):
        return None
    attested = tx.order_attestations(order.order_id)
    if not attested:
        return None
    spki, record = attested[0]  # one device identifier per order
    return serialization.load_der_public_key(spki), record  # type: ignore[return-value]
