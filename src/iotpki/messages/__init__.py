"""Signed device messages: COSE_Sign1 (RFC 9052) signing and verification."""

from iotpki.messages.cose import Sign1, decode_sign1, sign1, verify_sign1
from iotpki.messages.signed import MessageSigner, MessageVerifier, VerifiedMessage, key_id

__all__ = [
    "MessageSigner",
    "MessageVerifier",
    "Sign1",
    "VerifiedMessage",
    "decode_sign1",
    "key_id",
    "sign1",
    "verify_sign1",
]
