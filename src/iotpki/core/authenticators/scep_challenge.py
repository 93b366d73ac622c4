"""SCEP challenge passwords (RFC 8894 section 2.2): one-time, for one device, maybe one CA.

Only the password's SHA-256 is stored; it is consumed in the transaction that records the
certificate, or the pending request (:func:`iotpki.core.authenticators.consume`).
"""

from __future__ import annotations

import hmac

from iotpki.core.authenticators.model import (
    Authorization,
    Context,
    CredentialUse,
    ScepChallenge,
)
from iotpki.core.authenticators.secret import secret_hash
from iotpki.core.models import EnrollMethod
from iotpki.core.ports import Clock, Store
from iotpki.errors import AuthError

__all__ = ["ChallengeAuthenticator"]


class ChallengeAuthenticator:
    """A SCEP challenge password: unused, unexpired, for the CA the request addresses."""

    method = EnrollMethod.CHALLENGE

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def claimed(self, credentials: ScepChallenge) -> str:
        """Nothing: a challenge password names no device until it is found."""
        return ""

    def authorize(self, credentials: ScepChallenge, context: Context) -> Authorization:
        """The device the challenge password was made for, with the profile and CA it allows."""
        password = credentials.password
        if password is None:
            raise AuthError("the request carries no challenge password")
        digest = secret_hash(password)
        with self._store.transaction(readonly=True) as tx:
            challenge = tx.get_scep_challenge(digest)
        if challenge is None or not hmac.compare_digest(challenge.secret_hash, digest):
            raise AuthError("wrong challenge password")
        device = challenge.device_id
        if challenge.used_at is not None:
            raise AuthError("the challenge password was used already", device_id=device)
        if challenge.expires_at <= self._clock.now():
            raise AuthError("the challenge password has expired", device_id=device)
        ca = context.ca
        if challenge.ca_name is not None and challenge.ca_name != ca:
            raise AuthError(
                f"the challenge password is for CA {challenge.ca_name!r}, not {ca!r}", ca=ca
            )
        return Authorization(
            device_id=device,
            method=self.method,
            protocol=context.protocol,
            profile=challenge.profile,
            ca=ca,
            approval=challenge.approval,
            use=CredentialUse(self.method, challenge.challenge_id, device, context.transaction_id),
        )
