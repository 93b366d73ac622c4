"""What a rotation campaign changes in a renewal, read in the renewal's own transaction.

A certificate that an active campaign replaces is renewed under the campaign's target CA and
profile, with a key of its key type; the renewal marks the member replaced in the same
transaction that records the new certificate, so progress never runs ahead of issuance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotpki.core.keytypes import algorithm_of
from iotpki.core.models import (
    CampaignMember,
    CampaignRecord,
    CertificateRecord,
    MemberState,
)
from iotpki.core.ports import StoreTransaction
from iotpki.errors import PolicyViolation

__all__ = ["CampaignRenewal", "campaign_renewal"]


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

    def replaced(self, tx: StoreTransaction, new_serial: str, at: datetime) -> None:
        """Mark the member replaced by ``new_serial``."""
        tx.set_member_state(self.member, MemberState.REPLACED, replaced_by=new_serial, at=at)


def campaign_renewal(tx: StoreTransaction, old: CertificateRecord) -> CampaignRenewal | None:
    """The active campaign replacing ``old`` (a member not replaced yet), if any."""
    found = tx.membership(old.ca_name, old.serial)
    if found is None or found[1].state is not MemberState.PENDING:
        return None
    return CampaignRenewal(*found)
