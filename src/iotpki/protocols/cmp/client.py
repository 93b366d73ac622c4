"""The device's side of a CMP key update (RFC 9483 section 4.1.3): a ``kur`` signed with the
current certificate's key, asking for implicit confirmation, and the reading of its ``kup``.

Sans-I/O: :func:`key_update` builds the request, :func:`read_key_update` checks the answer's
signature (a CMP signer certified by a CA the device trusts), transaction and nonce, and returns
the new certificate. The keys are used through ``sign`` only, so a key that never leaves a
PKCS#11 token or a TPM renews as a file key does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import parser
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from pyasn1.codec.der import decoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4211, rfc5280, rfc9480

from iotpki.core.x509util import issued_by, signature_valid
from iotpki.errors import AuthError, IotpkiError, MalformedInput
from iotpki.protocols.cmp import codec
from iotpki.protocols.cmp.codec import IMPLICIT_CONFIRM, FailInfo

__all__ = ["CmpRejected", "KeyUpdate", "key_update", "read_key_update"]

_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_REJECTION = 2


class CmpRejected(IotpkiError):
    """The CA answered with a rejection: its status text and failInfo."""

    status = 403
    code = "cmp_rejected"


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """A built ``kur``: the DER to send, and what its answer must echo."""

    der: bytes
    transaction_id: bytes
    sender_nonce: bytes


def _algorithm(key: CertificateIssuerPrivateKeyTypes) -> str:
    """The signature algorithm (dotted OID) a key signs CMP messages with."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "1.2.840.10045.4.3.3" if key.curve.key_size >= 384 else "1.2.840.10045.4.3.2"
    if isinstance(key, rsa.RSAPrivateKey):
        return "1.2.840.113549.1.1.11"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "1.3.101.112"
    raise MalformedInput(f"a {type(key).__name__} cannot sign a CMP message")


def _sign(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> tuple[str, bytes]:
    """The signature algorithm (dotted OID) and a signature over ``data``."""
    algorithm = _algorithm(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
        return algorithm, key.sign(data, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return algorithm, key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return algorithm, key.sign(data)


def _template(subject: x509.Name, new_key: CertificateIssuerPrivateKeyTypes) -> rfc4211.CertRequest:
    request = rfc4211.CertRequest()
    request["certReqId"] = 0
    template = request["certTemplate"]
    name, _ = decoder.decode(subject.public_bytes(), asn1Spec=rfc5280.Name())
    template["subject"]["rdnSequence"] = name["rdnSequence"]
    spki_der = new_key.public_key().public_bytes(_DER, _SPKI)
    spki, _ = decoder.decode(spki_der, asn1Spec=rfc5280.SubjectPublicKeyInfo())
    template["publicKey"]["algorithm"] = spki["algorithm"]
    template["publicKey"]["subjectPublicKey"] = spki["subjectPublicKey"]
    return request


def key_update(
    current: x509.Certificate,
    current_key: CertificateIssuerPrivateKeyTypes,
    new_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
    recipient: x509.Name | None = None,
) -> KeyUpdate:
    """A ``kur`` for ``new_key`` under ``current``'s subject, proof of possession signed by
    the new key and the message signed by the current one (its certificate in extraCerts)."""
    message = rfc9480.PKIMessage()
    header = message["header"]
    header["pvno"] = 2
    header["sender"] = codec.general_name(current.subject)
    header["recipient"] = codec.general_name(recipient or current.issuer)
    header["messageTime"] = header["messageTime"].clone(now.strftime("%Y%m%d%H%M%SZ"))
    transaction_id, nonce = os.urandom(16), os.urandom(16)
    header["transactionID"] = transaction_id
    header["senderNonce"] = nonce
    try:
        ski = current.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        header["senderKID"] = ski.value.digest
    except x509.ExtensionNotFound:
        pass
    header["generalInfo"].append(codec.info_type_and_value(str(IMPLICIT_CONFIRM)))
    request = _template(current.subject, new_key)
    pop_alg, pop = _sign(new_key, codec.encode(request))
    msg = rfc4211.CertReqMsg()
    msg["certReq"] = request
    signing = msg["popo"]["signature"]
    signing["algorithmIdentifier"]["algorithm"] = univ.ObjectIdentifier(pop_alg)
    signing["signature"] = univ.BitString(hexValue=pop.hex())
    message["body"]["kur"].append(msg)
    header["protectionAlg"]["algorithm"] = univ.ObjectIdentifier(_algorithm(current_key))
    _, signature = _sign(current_key, codec.protected_part(message))
    message["protection"] = message["protection"].clone(hexValue=signature.hex())
    message["extraCerts"].append(codec.cmp_certificate(current))
    return KeyUpdate(codec.encode(message), transaction_id, nonce)


def read_key_update(
    der: bytes, sent: KeyUpdate, trusted: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, bool]:
    """The certificate a ``kup`` carries and whether the CA confirmed implicitly (else the
    device sends certConf); AuthError if the answer is not the CA's, CmpRejected if refused."""
    read = codec.decode(der)
    header = read.header
    if header.transaction_id != sent.transaction_id or header.recip_nonce != sent.sender_nonce:
        raise AuthError("the CMP answer is not for this request (transactionID or nonce)")
    _check_signer(read, trusted)
    if read.kind == "error":
        info = read.body["pKIStatusInfo"]
        raise CmpRejected(_status_text(info), fail_info=_fail_bits(info))
    if read.kind != "kup":
        raise MalformedInput(f"a kur is answered with kup, not {read.kind}")
    responses = read.body["response"]
    if len(responses) != 1:
        raise MalformedInput("the kup does not carry exactly one response")
    response = responses[0]
    if int(response["status"]["status"]) >= _REJECTION:
        raise CmpRejected(
            _status_text(response["status"]), fail_info=_fail_bits(response["status"])
        )
    tagged = codec.encode(response["certifiedKeyPair"]["certOrEncCert"]["certificate"])
    try:  # CertOrEncCert's certificate is [0] EXPLICIT: the certificate is its content
        cert = x509.load_der_x509_certificate(parser.parse(tagged)[4])
    except ValueError as exc:
        raise MalformedInput("the kup's certificate does not parse") from exc
    return cert, header.implicit_confirm


def _check_signer(read: codec.ReadMessage, trusted: Sequence[x509.Certificate]) -> None:
    """The answer is signed by its first extraCert, certified by a CA the device trusts."""
    algorithm = read.header.protection_alg
    if not read.extra_certs or algorithm is None or read.protection is None:
        raise AuthError("the CMP answer is not signed")
    signer = read.extra_certs[0]
    if not signature_valid(signer.public_key(), algorithm, read.protection, read.protected):
        raise AuthError("the CMP answer's signature does not verify")
    known = [*trusted, *read.extra_certs[1:]]
    issuer = next((c for c in known if issued_by(signer, c)), None)
    while issuer is not None and issuer not in trusted:
        issuer = next((c for c in trusted if issued_by(issuer, c)), None)
    if issuer is None:
        raise AuthError("the CMP answer's signer is not certified by a trusted CA")


def _status_text(info: rfc9480.PKIStatusInfo) -> str:
    texts = info["statusString"]
    return "; ".join(str(t) for t in texts) if texts.isValue else "rejected"


def _fail_bits(info: rfc9480.PKIStatusInfo) -> list[str]:
    bits = info["failInfo"]
    if not bits.isValue:
        return []
    return [f.name.lower() for f in FailInfo if int(f) < len(bits) and bits[int(f)]]
