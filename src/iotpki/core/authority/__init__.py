"""The certificate authority: the only code that signs certificates.

It is synchronous and knows nothing of HTTP; every change it makes is written to the audit log in
the same store transaction as the change, and a certificate is recorded before it is returned.
Refusals are audited in a transaction of their own and change nothing else; refusals of
anonymous requests go through :meth:`Authority.audit_refusal`, which folds repeats from one source
(:func:`iotpki.core.audit.fold_refusal`).

The parts, each a layer of the one :class:`Authority`: ``_base`` (state, CA reads),
``refusals`` (auditing refusals), ``revocation`` (revoke, CRL signing key, ``urls``), ``cas``
(CA lifecycle, the signing-CA cache), ``lint`` (drafts linted before the CA key signs) and
``issuance`` (issue, renew, look up).
"""

from __future__ import annotations

from iotpki.core.authority._base import (
    AuthorityConfig,
    EventListener,
    Issued,
    RecordHook,
    serial_hex,
)
from iotpki.core.authority.issuance import Issuance

__all__ = ["Authority", "AuthorityConfig", "EventListener", "Issued", "RecordHook", "serial_hex"]


class Authority(Issuance):
    """Issue, renew and revoke certificates; create and import CAs."""
