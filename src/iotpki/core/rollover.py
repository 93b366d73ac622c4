"""Root and issuing-CA rollover with an overlap, so that no relying party loses its path.

Root rollover (the RFC 4210 section 4.4 scheme, as RFC 7030 section 4.1.3 serves it):

1. a new root with a new key (and by default the old root's name); two cross-certificates,
   *new-with-old* (the new root's key certified by the old root) and *old-with-new* (the old
   key certified by the new root), both valid until the end of the overlap;
2. for each issuing CA under the old root, a successor under the new root; the old one is
   retired at once (it issues nothing more, its certificates stay valid and its CRLs go on), and
   renewals of its certificates come from the successor;
3. EST ``cacerts`` and the ACME alternate chain serve the new root and the cross-certificates:
   a device that trusts only the old root accepts the new one through new-with-old, and a
   relying party that trusts only the new root accepts old chains through old-with-new;
4. after the overlap, :func:`retire_root` retires the old root and the cross-certificates.

An issuing CA nearing expiry is renewed by :func:`renew_issuing`: a successor under the same
parent, with overlapping validity, and the old one retired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from iotpki.core.authority import Authority
from iotpki.core.keytypes import algorithm_of
from iotpki.core.models import CAKind, CARecord, CAStatus, KeyAlgorithm
from iotpki.errors import ConfigError, Conflict, PolicyViolation

__all__ = ["RootRollover", "cross_certificates", "renew_issuing", "retire_root", "roll_root"]


@dataclass(frozen=True, slots=True)
class RootRollover:
    """What a root rollover made."""

    old_root: str
    new_root: str
    new_with_old: str
    old_with_new: str
    successors: dict[str, str]  # old issuing CA -> its successor
    overlap_ends: datetime


def _algorithm(record: CARecord) -> KeyAlgorithm:
    algorithm = algorithm_of(record.certificate.public_key())
    if algorithm is None:
        raise ConfigError(f"CA {record.name!r} has a key type iotpki cannot create")
    return algorithm


def _common_name(record: CARecord) -> str:
    names = record.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else record.name


def _lifetime(record: CARecord) -> timedelta:
    cert = record.certificate
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def renew_issuing(
    authority: Authority,
    old: str,
    *,
    new: str,
    actor: str,
    parent: str | None = None,
    lifetime: timedelta | None = None,
    common_name: str | None = None,
) -> CARecord:
    """A successor to issuing CA ``old`` (same key type and backend), then ``old`` retired."""
    record = authority.get_ca(old)
    if record.kind is not CAKind.ISSUING or record.status is not CAStatus.ACTIVE:
        raise Conflict(f"CA {old!r} is not an active issuing CA", ca=old)
    if record.key_backend is None:
        raise ConfigError(f"the key of CA {old!r} is not held here", ca=old)
    successor = authority.create_issuing(
        new,
        parent=parent or record.parent or "",
        common_name=common_name or new,
        algorithm=_algorithm(record),
        lifetime=lifetime or _lifetime(record),
        backend=record.key_backend,
        actor=actor,
    )
    authority.set_ca_status(old, CAStatus.RETIRED, actor=actor, reason=f"succeeded by {new}")
    return successor


def roll_root(
    authority: Authority,
    old_root: str,
    *,
    new_root: str,
    overlap: timedelta,
    actor: str,
    common_name: str | None = None,
    algorithm: KeyAlgorithm | None = None,
    lifetime: timedelta | None = None,
    backend: str | None = None,
) -> RootRollover:
    """Create the new root, both cross-certificates and successors of the issuing CAs."""
    old = authority.get_ca(old_root)
    if old.kind is not CAKind.ROOT or old.status is not CAStatus.ACTIVE or old.parent:
        raise Conflict(f"CA {old_root!r} is not an active root", ca=old_root)
    if old.key_backend is None:
        raise ConfigError(f"the key of root {old_root!r} is not held here", ca=old_root)
    if overlap <= timedelta(0):
        raise PolicyViolation("the overlap must be positive")
    # The same name by default: the cross-certificates are then self-issued and do not count
    # against the roots' path length (RFC 5280 section 6.1.4 (l)).
    authority.create_root(
        new_root,
        common_name=common_name or _common_name(old),
        algorithm=algorithm or _algorithm(old),
        lifetime=lifetime or _lifetime(old),
        backend=backend or old.key_backend,
        actor=actor,
    )
    ends = authority.clock.now() + overlap
    new_with_old = f"{new_root}-by-{old_root}"
    old_with_new = f"{old_root}-by-{new_root}"
    authority.cross_certify(
        new_root, issuer_ca=old_root, name=new_with_old, not_after=ends, actor=actor
    )
    authority.cross_certify(
        old_root, issuer_ca=new_root, name=old_with_new, not_after=ends, actor=actor
    )
    successors: dict[str, str] = {}
    for ca in authority.list_cas():
        if ca.parent == old_root and ca.kind is CAKind.ISSUING and ca.status is CAStatus.ACTIVE:
            successor = f"{ca.name}-{new_root}"[:63]
            renew_issuing(
                authority,
                ca.name,
                new=successor,
                parent=new_root,
                common_name=f"{_common_name(ca)} ({new_root})",
                actor=actor,
            )
            successors[ca.name] = successor
    authority.record_event(
        actor,
        "ca.rollover",
        old_root,
        {"new_root": new_root, "successors": successors, "overlap_ends": ends.isoformat()},
    )
    return RootRollover(old_root, new_root, new_with_old, old_with_new, successors, ends)


def cross_certificates(authority: Authority, root: str) -> list[CARecord]:
    """The cross-certificate records that certify ``root``'s key or were signed by it."""
    key = authority.get_ca(root).certificate.public_key()
    return [
        ca
        for ca in authority.list_cas()
        if ca.kind is CAKind.ROOT
        and ca.parent is not None
        and ca.key_ref is None
        and ca.certificate_der is not None
        and (ca.parent == root or ca.certificate.public_key() == key)
    ]


def retire_root(
    authority: Authority, old_root: str, *, actor: str, force: bool = False
) -> list[str]:
    """After the overlap, retire the old root and its cross-certificates; the names retired.

    Refused while an issuing CA under it still issues, or before the overlap ends (the expiry of
    the cross-certificates) unless ``force``.
    """
    old = authority.get_ca(old_root)
    if old.kind is not CAKind.ROOT or old.status is not CAStatus.ACTIVE:
        raise Conflict(f"CA {old_root!r} is not an active root", ca=old_root)
    active = [
        ca.name
        for ca in authority.list_cas()
        if ca.parent == old_root and ca.kind is CAKind.ISSUING and ca.status is CAStatus.ACTIVE
    ]
    if active:
        raise Conflict(f"issuing CAs under {old_root!r} still issue: {', '.join(active)}")
    crosses = [c for c in cross_certificates(authority, old_root) if c.status is CAStatus.ACTIVE]
    now = authority.clock.now()
    ends = min((c.certificate.not_valid_after_utc for c in crosses), default=now)
    if now < ends and not force:
        raise Conflict(
            f"the overlap of {old_root!r} runs until {ends.isoformat()}; retire it then",
            ca=old_root,
        )
    retired = []
    for ca in [*crosses, old]:
        authority.set_ca_status(ca.name, CAStatus.RETIRED, actor=actor, reason="rollover done")
        retired.append(ca.name)
    return retired
