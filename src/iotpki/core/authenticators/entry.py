"""The one way in: dispatch credentials to their authenticator, audit refusals, consume.

:meth:`Authenticators.authorize` is where every refusal of an enrollment's credentials is
audited (folded per source and window by :meth:`Authority.audit_refusal`, which marks the error
so that no adapter audits it again). :func:`consume` is the only code that uses up a one-time
credential; :meth:`Authenticators.within` runs it in the transaction that records the
certificate, so a credential is consumed exactly when a certificate is recorded.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from iotpki.core.authenticators.bootstrap import BootstrapAuthenticator
from iotpki.core.authenticators.claim import ClaimAuthenticator
from iotpki.core.authenticators.current import CurrentAuthenticator
from iotpki.core.authenticators.model import (
    Authenticator,
    Authorization,
    BootstrapCertificate,
    ClaimCertificate,
    Context,
    Credentials,
    CredentialUse,
    CurrentCertificate,
    MacProof,
    OneTimeSecret,
    ScepChallenge,
)
from iotpki.core.authenticators.scep_challenge import ChallengeAuthenticator
from iotpki.core.authenticators.secret import (
    MacAuthenticator,
    SecretAuthenticator,
    SecretLimits,
)
from iotpki.core.authority import Authority, RecordHook
from iotpki.core.models import CertificateRecord, EnrollMethod
from iotpki.core.ports import StoreTransaction
from iotpki.errors import AuthError, IotpkiError

__all__ = ["Authenticators", "consume"]


def consume(tx: StoreTransaction, use: CredentialUse, at: datetime) -> None:
    """Use up a one-time credential in ``tx``; ``AuthError`` (rolling ``tx`` back) if it was."""
    if use.method is EnrollMethod.SECRET:
        secret = next(
            (s for s in tx.enrollment_secrets(use.device_id) if s.secret_id == use.credential_id),
            None,
        )
        if secret is None or not tx.update_enrollment_secret(replace(secret, used_at=at)):
            raise AuthError("the enrollment secret was already used")
    elif use.method is EnrollMethod.CHALLENGE:
        if not tx.use_scep_challenge(use.credential_id, at, use.transaction_id or ""):
            raise AuthError("the challenge password was used already", device_id=use.device_id)
    else:
        raise AuthError(f"a {use.method} credential is not one-time")


class Authenticators:
    """Every authentication method, behind one entry."""

    def __init__(
        self,
        authority: Authority,
        limits: SecretLimits | None = None,
        secret_key: bytes | None = None,
    ) -> None:
        self.authority = authority
        store, clock = authority.store, authority.clock
        self.secret = SecretAuthenticator(store, clock, limits)
        self.mac = MacAuthenticator(self.secret, secret_key)
        self.bootstrap = BootstrapAuthenticator(store, clock)
        self.claim = ClaimAuthenticator(store, clock, self._is_claim_profile)
        self.current = CurrentAuthenticator(store, clock)
        self.challenge = ChallengeAuthenticator(store, clock)
        self._by_type: dict[type, Authenticator[Any]] = {
            OneTimeSecret: self.secret,
            MacProof: self.mac,
            BootstrapCertificate: self.bootstrap,
            ClaimCertificate: self.claim,
            CurrentCertificate: self.current,
            ScepChallenge: self.challenge,
        }

    def _is_claim_profile(self, name: str) -> bool:
        try:
            return self.authority.profile(name).identity == "claim"
        except IotpkiError:
            return False  # a profile no longer configured

    def authorize(self, credentials: Credentials, context: Context) -> Authorization:
        """The authorization ``credentials`` carry; a refusal is audited here, then raised."""
        authenticator = self._by_type[type(credentials)]
        try:
            return authenticator.authorize(credentials, context)
        except IotpkiError as exc:
            claimed = authenticator.claimed(credentials)
            self.authority.audit_refusal(
                exc,
                source=context.source,
                actor=f"{context.protocol}:{authenticator.method}:{claimed}",
                action=f"{context.protocol}.authenticate.refused",
                target=claimed or context.transaction_id or "",
                extra=exc.data,
            )
            raise

    def within(self, authorization: Authorization, then: RecordHook | None = None) -> RecordHook:
        """A record hook consuming the authorization's credential, then running ``then``."""

        def hook(tx: StoreTransaction, record: CertificateRecord) -> None:
            if authorization.use is not None:
                consume(tx, authorization.use, self.authority.clock.now())
            if then is not None:
                then(tx, record)

        return hook
