"""ACME Renewal Information (RFC 9773): suggested renewal windows that spread a fleet's
renewals, the operator's override that pulls windows forward after an incident, and the
window a rotation campaign gives each of its certificates (whatever protocol issued it).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from iotpki.core.acme_ports import AcmeStore, RenewalOverride
from iotpki.core.campaigns import Campaigns
from iotpki.core.models import CertificateRecord
from iotpki.errors import NotFound, RequestError
from iotpki.protocols.acme import messages
from iotpki.protocols.acme.context import AcmeContext, new_id
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = ["advance", "override_json", "renewal_info", "suggested_window"]

# The fleet's renewals fall between 60 % and 80 % of a certificate's lifetime; each
# certificate gets a sub-window of 4 % of its lifetime placed by a hash of its serial, so
# that certificates issued together do not all renew together.
_FLEET_START, _FLEET_SPAN, _OWN_SPAN = 0.60, 0.20, 0.04
_MIN_RETRY = 60  # seconds: the shortest Retry-After given


def _matches(override: RenewalOverride, record: CertificateRecord) -> bool:
    if override.serial is not None:
        return override.serial == record.serial and override.ca_name in (None, record.ca_name)
    issued = record.issued_at or record.not_before
    return (
        (override.ca_name is None or override.ca_name == record.ca_name)
        and (override.profile is None or override.profile == record.profile)
        and (override.issued_before is None or issued < override.issued_before)
    )


def suggested_window(
    record: CertificateRecord, overrides: list[RenewalOverride]
) -> tuple[datetime, datetime, str | None]:
    """The window (start, end, explanation URL) in which to renew this certificate."""
    for override in overrides:
        if _matches(override, record):
            return override.window_start, override.window_end, override.explanation_url
    life = record.not_after - record.not_before
    fraction = int.from_bytes(hashlib.sha256(record.serial.encode()).digest()[:8], "big") / 2**64
    offset = _FLEET_START + fraction * (_FLEET_SPAN - _OWN_SPAN)
    start = record.not_before + life * offset
    return start, start + life * _OWN_SPAN, None


def renewal_info(ctx: AcmeContext, cert_id: str) -> tuple[dict[str, Any], int]:
    """RFC 9773 section 4.2: the renewalInfo object and its Retry-After in seconds."""
    _, serial = messages.parse_cert_id(cert_id)
    with ctx.store.transaction(readonly=True) as tx:
        record = tx.get_certificate(None, serial)
        overrides = tx.renewal_overrides()
    if (
        record is None
        or messages.cert_id(record.certificate).split(".")[0] != cert_id.split(".")[0]
    ):
        raise AcmeProblem("malformed", "no certificate with that CertID", status=404)
    retry_after = ctx.config.ari_retry_after
    campaign = Campaigns(ctx.authority).window(record)
    if campaign is not None:  # a rotation campaign's window comes first (core.campaigns)
        start, end, explanation = campaign[0], campaign[1], None
        until = int((start - ctx.now()).total_seconds())  # ask again when the window opens
        retry_after = min(retry_after, max(_MIN_RETRY, until))
    else:
        start, end, explanation = suggested_window(record, overrides)
    body: dict[str, Any] = {
        "suggestedWindow": {"start": messages.timestamp(start), "end": messages.timestamp(end)}
    }
    if explanation:
        body["explanationURL"] = explanation
    return body, retry_after


def advance(
    store: AcmeStore,
    *,
    now: datetime,
    actor: str,
    serial: str | None = None,
    ca_name: str | None = None,
    profile: str | None = None,
    issued_before: datetime | None = None,
    within: timedelta = timedelta(hours=6),
    explanation_url: str | None = None,
) -> RenewalOverride:
    """Pull renewal windows forward to [now, now + within] for the matching certificates."""
    if serial is None and ca_name is None and profile is None and issued_before is None:
        raise RequestError("name a serial, a CA, a profile or an issued-before time")
    if within <= timedelta(0):
        raise RequestError("the window must have a positive length")
    override = RenewalOverride(
        override_id=new_id(),
        window_start=now,
        window_end=now + within,
        created_at=now,
        serial=serial.lower().removeprefix("0x").lstrip("0") or "0" if serial else None,
        ca_name=ca_name,
        profile=profile,
        issued_before=issued_before,
        explanation_url=explanation_url,
        actor=actor,
    )
    with store.transaction() as tx:
        if override.serial is not None and tx.get_certificate(ca_name, override.serial) is None:
            raise NotFound(f"no certificate with serial {serial}", serial=serial)
        tx.add_renewal_override(override)
        tx.append_audit(
            now, actor, "acme.renewal.advanced", override.override_id, override_json(override)
        )
    return override


def override_json(override: RenewalOverride) -> dict[str, Any]:
    """An override as the admin API, CLI and audit log show it."""
    return {
        "id": override.override_id,
        "window_start": override.window_start.isoformat(),
        "window_end": override.window_end.isoformat(),
        "serial": override.serial,
        "ca": override.ca_name,
        "profile": override.profile,
        "issued_before": override.issued_before.isoformat() if override.issued_before else None,
        "explanation_url": override.explanation_url,
    }
