"""What the HTTPS listener's TLS context needs for EST client authentication.

The context must accept IDevIDs from the bootstrap CAs the operator registered, also those
registered after the server started (:func:`keep_bootstrap_trust`). Validity times are not
checked in the handshake but by the application (``Enrollment``), so that an expired IDevID or
certificate gets an HTTP 401 with a reason, as RFC 7030 section 4.2.3 wants, instead of a TLS
alert; a proxy-forwarded certificate is checked the same way.
"""

from __future__ import annotations

import logging
import ssl

from iotpki.core.encoding import pem
from iotpki.core.enrollment import Enrollment

__all__ = ["trust_bootstrap_cas"]

log = logging.getLogger(__name__)

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (the ssl module has no name for it).
_NO_CHECK_TIME = 0x200000


def trust_bootstrap_cas(
    context: ssl.SSLContext, enrollment: Enrollment, loaded: set[str] | None = None
) -> set[str]:
    """Add the registered bootstrap CAs to the context's client-certificate anchors.

    Returns the fingerprints now loaded; pass them back to add only new ones. Revoked bootstrap
    CAs stay loaded in a running context but are refused by the application.
    """
    loaded = set() if loaded is None else loaded
    context.verify_flags = ssl.VerifyFlags(context.verify_flags | _NO_CHECK_TIME)
    new = [
        ca
        for ca in enrollment.list_bootstrap_cas()
        if ca.status == "active" and ca.fingerprint not in loaded
    ]
    if new:
        context.load_verify_locations(cadata=pem(ca.certificate for ca in new).decode())
        loaded |= {ca.fingerprint for ca in new}
        log.info("trusting bootstrap CAs for client authentication: %s", [c.name for c in new])
    return loaded
