"""Message protection (RFC 4210 section 5.1.3, RFC 9481 section 6): MACs keyed by a shared
secret (PasswordBasedMac, PBMAC1) and signatures.

PasswordBasedMac derives its key by iterating a hash over secret and salt; PBMAC1 uses PBKDF2
(cryptography). Parameters come from the sender: iteration counts are bounded, so that a
message cannot make the server hash for seconds, and unknown algorithms are ``badAlg``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4210, rfc5280, rfc8018

from iotpki.core.x509util import SIGNATURE_HASHES
from iotpki.protocols.cmp.codec import CmpFailure, FailInfo, encode

__all__ = [
    "MAX_ITERATIONS",
    "PASSWORD_BASED_MAC",
    "PBMAC1",
    "MacParameters",
    "is_mac",
    "read_mac_parameters",
    "signature_algorithm_known",
]

PASSWORD_BASED_MAC = "1.2.840.113533.7.66.13"
PBMAC1 = "1.2.840.113549.1.5.14"
_PBKDF2 = "1.2.840.113549.1.5.12"
MAX_ITERATIONS = 100_000
"""The most hash iterations a sender may ask for (RFC 9481 asks for at least 1,000 for
PBMAC1; OpenSSL's PasswordBasedMac uses 500)."""

_HASHES = {  # one-way functions of PasswordBasedMac
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_HMACS = {  # the MAC algorithms of both schemes
    "1.3.6.1.5.5.8.1.2": "sha1",  # hmac-sha1 (RFC 2202, as OpenSSL sends it)
    "1.2.840.113549.2.7": "sha1",  # hmacWithSHA1
    "1.2.840.113549.2.9": "sha256",  # hmacWithSHA256
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
_PRF_HASHES_BY_NAME = {  # PBKDF2's PRF and PBMAC1's MAC: HMAC with a SHA-2 (or SHA-1)
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
_PRFS: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


@dataclass(frozen=True, slots=True)
class MacParameters:
    """How a MAC key is made from the shared secret, and which HMAC it keys."""

    scheme: str  # PASSWORD_BASED_MAC or PBMAC1
    salt: bytes
    iterations: int
    owf: str  # hashlib name: PasswordBasedMac's one-way function, PBKDF2's PRF hash
    mac_hash: str  # hashlib name of the HMAC
    key_length: int = 32  # PBKDF2's output length

    def key(self, secret: bytes) -> bytes:
        """The MAC key for ``secret``."""
        if self.scheme == PASSWORD_BASED_MAC:
            key = hashlib.new(self.owf, secret + self.salt).digest()
            for _ in range(self.iterations - 1):
                key = hashlib.new(self.owf, key).digest()
            return key
        kdf = PBKDF2HMAC(_PRFS[self.owf], self.key_length, self.salt, self.iterations)
        return kdf.derive(secret)

    def tag(self, secret: bytes, data: bytes) -> bytes:
        """The MAC of ``data`` under ``secret``."""
        return hmac.new(self.key(secret), data, self.mac_hash).digest()

    def verify(self, secret: bytes, data: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is the MAC of ``data`` under ``secret``."""
        return hmac.compare_digest(self.tag(secret, data), tag)

    def fresh(self) -> MacParameters:
        """The same scheme and strength with a new salt, for an answer."""
        return MacParameters(
            self.scheme, os.urandom(16), self.iterations, self.owf, self.mac_hash, self.key_length
        )

    def algorithm(self) -> rfc5280.AlgorithmIdentifier:
        """The protectionAlg naming these parameters."""
        identifier = rfc5280.AlgorithmIdentifier()
        if self.scheme == PASSWORD_BASED_MAC:
            params = rfc4210.PBMParameter()
            params["salt"] = self.salt
            params["owf"]["algorithm"] = _oid_of(_HASHES, self.owf)
            params["iterationCount"] = self.iterations
            params["mac"]["algorithm"] = _oid_of(_HMACS, self.mac_hash, prefer="1.3.6.1.5.5.8.1.2")
        else:
            kdf = rfc8018.PBKDF2_params()
            kdf["salt"]["specified"] = self.salt
            kdf["iterationCount"] = self.iterations
            kdf["keyLength"] = self.key_length
            kdf["prf"]["algorithm"] = _oid_of(_PRF_HASHES_BY_NAME, self.owf)
            params = rfc8018.PBMAC1_params()
            params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(_PBKDF2)
            params["keyDerivationFunc"]["parameters"] = univ.Any(encode(kdf))
            params["messageAuthScheme"]["algorithm"] = _oid_of(_PRF_HASHES_BY_NAME, self.mac_hash)
        identifier["algorithm"] = univ.ObjectIdentifier(self.scheme)
        identifier["parameters"] = univ.Any(encode(params))
        return identifier


def _oid_of(table: dict[str, str], name: str, prefer: str | None = None) -> univ.ObjectIdentifier:
    if prefer is not None and table.get(prefer) == name:
        return univ.ObjectIdentifier(prefer)
    return univ.ObjectIdentifier(next(oid for oid, value in table.items() if value == name))


def is_mac(algorithm: str | None) -> bool:
    """Whether a protectionAlg is MAC-based."""
    return algorithm in (PASSWORD_BASED_MAC, PBMAC1)


def _bad_alg(message: str) -> CmpFailure:
    return CmpFailure(message, FailInfo.BAD_ALG)


def _iterations(count: int) -> int:
    if not 1 <= count <= MAX_ITERATIONS:
        raise _bad_alg(f"an iteration count of {count} is outside 1..{MAX_ITERATIONS}")
    return count


def read_mac_parameters(algorithm: str, params: bytes | None) -> MacParameters:
    """The MAC parameters of a protectionAlg; ``badAlg`` if they are unknown or out of bounds."""
    if params is None:
        raise _bad_alg("the MAC algorithm has no parameters")
    try:
        if algorithm == PASSWORD_BASED_MAC:
            pbm, _ = decoder.decode(params, asn1Spec=rfc4210.PBMParameter())
            owf = _HASHES.get(str(pbm["owf"]["algorithm"]))
            mac = _HMACS.get(str(pbm["mac"]["algorithm"]))
            if owf is None or mac is None:
                raise _bad_alg("unsupported PasswordBasedMac one-way function or MAC")
            salt = bytes(pbm["salt"])
            return MacParameters(algorithm, salt, _iterations(int(pbm["iterationCount"])), owf, mac)
        if algorithm == PBMAC1:
            pbmac1, _ = decoder.decode(params, asn1Spec=rfc8018.PBMAC1_params())
            kdf = pbmac1["keyDerivationFunc"]
            if str(kdf["algorithm"]) != _PBKDF2:
                raise _bad_alg("PBMAC1 needs PBKDF2 as its key derivation")
            pbkdf2, _ = decoder.decode(bytes(kdf["parameters"]), asn1Spec=rfc8018.PBKDF2_params())
            prf = _PRF_HASHES_BY_NAME.get(str(pbkdf2["prf"]["algorithm"]))
            mac = _PRF_HASHES_BY_NAME.get(str(pbmac1["messageAuthScheme"]["algorithm"]))
            if prf is None or mac is None or not pbkdf2["keyLength"].isValue:
                raise _bad_alg("unsupported PBMAC1 PRF or MAC, or no key length")
            length = int(pbkdf2["keyLength"])
            if not 16 <= length <= 64:
                raise _bad_alg("a PBMAC1 key length outside 16..64 bytes")
            salt = bytes(pbkdf2["salt"]["specified"])
            iterations = _iterations(int(pbkdf2["iterationCount"]))
            return MacParameters(algorithm, salt, iterations, prf, mac, length)
    except CmpFailure:
        raise
    except (PyAsn1Error, ValueError, TypeError, KeyError) as exc:
        raise _bad_alg("the MAC parameters do not parse") from exc
    raise _bad_alg(f"unsupported MAC algorithm {algorithm}")


def signature_algorithm_known(algorithm: str | None) -> bool:
    """Whether ``algorithm`` is a signature algorithm this server verifies."""
    return algorithm in SIGNATURE_HASHES
