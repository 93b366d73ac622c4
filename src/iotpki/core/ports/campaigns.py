"""The store's rotation campaigns: the campaigns and the certificates each replaces."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from iotpki.core.models import CampaignMember, CampaignRecord, CampaignStatus, MemberState

__all__ = ["CampaignTx"]


class CampaignTx(Protocol):
    """Campaigns, their members and where each stands."""

    def add_campaign(self, record: CampaignRecord) -> None:
        """Keep a new campaign."""
        ...

    def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        """A campaign by ID."""
        ...

    def list_campaigns(self) -> list[CampaignRecord]:
        """Every campaign, newest first."""
        ...

    def set_campaign_status(self, campaign_id: str, status: CampaignStatus) -> None:
        """Pause, resume, cancel or finish a campaign."""
        ...

    def add_campaign_members(self, members: list[CampaignMember]) -> None:
        """Keep the certificates a campaign replaces, with their windows."""
        ...

    def membership(self, ca_name: str, serial: str) -> tuple[CampaignRecord, CampaignMember] | None:
        """The active campaign that replaces this certificate, and its member row, if any."""
        ...

    def set_member_state(
        self,
        member: CampaignMember,
        state: MemberState,
        *,
        replaced_by: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record where a member stands (and what replaced it, when)."""
        ...

    def campaign_members(
        self, campaign_id: str, state: MemberState | None = None, limit: int = 1000
    ) -> list[CampaignMember]:
        """A campaign's members (in one state), by window."""
        ...

    def member_counts(self, campaign_id: str) -> dict[MemberState, int]:
        """How many members of a campaign are in each state."""
        ...

    def replacement_times(self, campaign_id: str) -> list[datetime]:
        """When each replaced member was replaced, in order."""
        ...
