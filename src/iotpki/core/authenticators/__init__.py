"""Who may enroll, decided in one place: credentials in, an :class:`Authorization` out.

One file per method (step-ca's provisioners are the model): ``secret`` (one-time enrollment
secret, in the clear or as a MAC key), ``bootstrap`` (IDevID from a registered bootstrap CA),
``claim`` (a production batch's claim certificate, over MQTT),
``current`` (the device's current certificate), ``scep_challenge`` (SCEP challenge
password), ``acme_account`` (an ACME account finalizing an order its authorizations cover).
:class:`Authenticators` dispatches, audits refusals and consumes one-time credentials inside the
issuing transaction.
A protocol adapter turns its request into :data:`Credentials` and a :class:`Context`.
"""

from iotpki.core.authenticators.acme_account import (
    DEVICE_IDENTIFIERS,
    AcmeAccountAuthenticator,
    AcmeAccountOrder,
)
from iotpki.core.authenticators.bootstrap import idevid_identity
from iotpki.core.authenticators.entry import Authenticators, consume
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
from iotpki.core.authenticators.secret import (
    ENROLLMENT_KEY,
    SecretLimits,
    check_active,
    derived_secret,
    secret_hash,
)

__all__ = [
    "DEVICE_IDENTIFIERS",
    "ENROLLMENT_KEY",
    "AcmeAccountAuthenticator",
    "AcmeAccountOrder",
    "Authenticator",
    "Authenticators",
    "Authorization",
    "BootstrapCertificate",
    "ClaimCertificate",
    "Context",
    "CredentialUse",
    "Credentials",
    "CurrentCertificate",
    "MacProof",
    "OneTimeSecret",
    "ScepChallenge",
    "SecretLimits",
    "check_active",
    "consume",
    "derived_secret",
    "idevid_identity",
    "secret_hash",
]
