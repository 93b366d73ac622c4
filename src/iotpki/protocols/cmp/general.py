"""General messages (RFC 9483 section 4.3): what a ``genm`` may ask and the ``genp`` answers."""

from __future__ import annotations

from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280, rfc9480

from iotpki.core.authority import Authority
from iotpki.core.models import KeyType
from iotpki.protocols.cmp import codec

__all__ = ["answers"]

CA_CERTS = "1.3.6.1.5.5.7.4.17"  # id-it-caCerts (RFC 9480 section 2.14)
_ROOT_CA_CERT = "1.3.6.1.5.5.7.4.20"  # id-it-rootCaCert: asks whether the root was updated
_ROOT_CA_KEY_UPDATE = "1.3.6.1.5.5.7.4.18"
_SIGN_KEY_PAIR_TYPES = "1.3.6.1.5.5.7.4.2"
_KEY_ALGORITHMS: dict[KeyType, tuple[str, str | None]] = {  # announced per key type
    KeyType.P256: ("1.2.840.10045.2.1", "1.2.840.10045.3.1.7"),
    KeyType.P384: ("1.2.840.10045.2.1", "1.3.132.0.34"),
    KeyType.RSA: ("1.2.840.113549.1.1.1", None),
    KeyType.ED25519: ("1.3.101.112", None),
    KeyType.MLDSA44: ("2.16.840.1.101.3.4.3.17", None),
    KeyType.MLDSA65: ("2.16.840.1.101.3.4.3.18", None),
}


def answers(
    authority: Authority, asked: list[str], *, profile: str | None, ca: str | None
) -> list[rfc9480.InfoTypeAndValue]:
    """An answer per known InfoType asked (CA certificates when nothing is asked); CA
    certificates, root CA update (none) and the key types the profile accepts."""
    ca_name = ca or authority.default_issuing_ca()
    found: list[rfc9480.InfoTypeAndValue] = []
    for oid in asked or [CA_CERTS]:
        if oid == CA_CERTS:
            certs = univ.SequenceOf(componentType=rfc9480.CMPCertificate())
            for cert in authority.chain(ca_name):
                certs.append(codec.cmp_certificate(cert))
            found.append(codec.info_type_and_value(oid, certs))
        elif oid == _ROOT_CA_CERT:
            found.append(codec.info_type_and_value(_ROOT_CA_KEY_UPDATE))  # no update
        elif oid == _SIGN_KEY_PAIR_TYPES:
            found.append(codec.info_type_and_value(oid, _key_algorithms(authority, profile)))
    return found


def _key_algorithms(authority: Authority, profile: str | None) -> univ.SequenceOf:
    algorithms = univ.SequenceOf(componentType=rfc5280.AlgorithmIdentifier())
    for key_type in authority.profile(profile or "device").key_types:
        algorithm, curve = _KEY_ALGORITHMS[key_type]
        identifier = rfc5280.AlgorithmIdentifier()
        identifier["algorithm"] = univ.ObjectIdentifier(algorithm)
        if curve is not None:
            identifier["parameters"] = univ.Any(codec.encode(univ.ObjectIdentifier(curve)))
        algorithms.append(identifier)
    return algorithms
