"""What a rotation campaign changes in a renewal, read in the renewal's own transaction.

A certificate that an active campaign replaces is renewed under the campaign's target CA and
profile, with a key of its key type, and no faster than the campaign's rate (``Busy``, retry
later, beyond it). The renewal marks the member replaced in the same transaction that records
the new certificate, so progress never runs ahead of issuance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotpki.core.keytypes import algorithm_of
from iotpki.core.models import (
    CampaignMember,
    CampaignRecord,
    CampaignStatus,
    CertificateRecord,
    MemberState,
)
from iotpki.core.ports import Clock, StoreTransaction
from iotpki.core.ports.shared import RateCounters
from iotpki.core.ratelimit import SharedWindow
from iotpki.errors import Busy, PolicyViolation

__all__ = ["CampaignRenewal", "campaign_renewal", "count_renewal", "running_campaigns"]

_PACE_WINDOW = 10.0  # seconds: a burst never exceeds ten seconds' worth of the rate


@dataclass(frozen=True, slots=True)
class CampaignRenewal:
    """The campaign a renewal belongs to, and what it asks of the new certificate."""

    campaign: CampaignRecord
    member: CampaignMember

    def check_key(self, key: CertificatePublicKeyTypes) -> None:
        """Refuse a new key of another type than the campaign's."""
        wanted = self.campaign.key_type
        if wanted is None:
            return
        algorithm = algorithm_of(key)
        if algorithm is None or algorithm.key_type is not wanted:
            raise PolicyViolation(
                f"campaign {self.campaign.name} replaces this certificate with a {wanted} key: "
                f"renew with a new {wanted} key",
                campaign=self.campaign.campaign_id,
                key_type=str(wanted),
            )

    def pace(self, rates: RateCounters | None, clock: Clock) -> None:
        """Busy (retry later) when the campaign's renewals, ordinary renewals counted in, arrive
        faster than its rate."""
        if rates is None:
            return
        wait = _pacer(self.campaign, rates, clock).retry_after([self.campaign.campaign_id])
        if wait is not None:
            raise Busy(
                f"campaign {self.campaign.name} is at its rate: renew again in {wait}s",
                retry_after=wait,
                campaign=self.campaign.campaign_id,
            )

    def replaced(self, tx: StoreTransaction, new_serial: str, at: datetime) -> None:
        """Mark the member replaced by ``new_serial``."""
        tx.set_member_state(self.member, MemberState.REPLACED, replaced_by=new_serial, at=at)


def campaign_renewal(tx: StoreTransaction, old: CertificateRecord) -> CampaignRenewal | None:
    """The active campaign replacing ``old`` (a member not replaced yet), if any."""
    found = tx.membership(old.ca_name, old.serial)
    if found is None or found[1].state is not MemberState.PENDING:
        return None
    return CampaignRenewal(*found)


def running_campaigns(tx: StoreTransaction) -> list[CampaignRecord]:
    """The active campaigns, whose rates ordinary renewals count in."""
    return [c for c in tx.list_campaigns() if c.status is CampaignStatus.ACTIVE]


def count_renewal(
    campaigns: list[CampaignRecord], rates: RateCounters | None, clock: Clock
) -> None:
    """Count an ordinary renewal in each running campaign's rate (it is never refused: the
    campaigns' own renewals get what is left)."""
    if rates is None:
        return
    for campaign in campaigns:
        _pacer(campaign, rates, clock).count([campaign.campaign_id])


def _pacer(campaign: CampaignRecord, rates: RateCounters, clock: Clock) -> SharedWindow:
    """A campaign's rate over a sliding ten seconds (or one renewal's time at a slower rate),
    shared by the replicas."""
    window = max(_PACE_WINDOW, 1 / campaign.max_rate)
    limit = max(1, round(campaign.max_rate * window))
    return SharedWindow(rates, "campaign", limit, timedelta(seconds=window), clock)
