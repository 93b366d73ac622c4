"""SQL for rotation campaigns (a mixin of :class:`iotpki.store.sql.SqlTransaction`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.engine import Row

from iotpki.core.models import (
    CampaignMember,
    CampaignRecord,
    CampaignStatus,
    KeyType,
    MemberState,
)
from iotpki.store import schema as s

__all__ = ["CampaignSql"]

_INSERT_BATCH = 1000


def _campaign(row: Row[Any]) -> CampaignRecord:
    return CampaignRecord(
        campaign_id=row.campaign_id,
        name=row.name,
        selector=row.selector,
        deadline=row.deadline,
        max_rate=float(row.max_rate),
        status=CampaignStatus(row.status),
        created_at=row.created_at,
        created_by=row.created_by,
        target_ca=row.target_ca,
        profile=row.profile,
        key_type=KeyType(row.key_type) if row.key_type else None,
        revoke_after=row.revoke_after,
        members=row.members,
    )


def _member(row: Row[Any]) -> CampaignMember:
    return CampaignMember(
        campaign_id=row.campaign_id,
        ca_name=row.ca_name,
        serial=row.serial,
        device_id=row.device_id,
        window_start=row.window_start,
        window_end=row.window_end,
        state=MemberState(row.state),
        replaced_by=row.replaced_by,
        replaced_at=row.replaced_at,
    )


def _member_values(member: CampaignMember) -> dict[str, object]:
    return {
        "campaign_id": member.campaign_id,
        "ca_name": member.ca_name,
        "serial": member.serial,
        "device_id": member.device_id,
        "window_start": member.window_start,
        "window_end": member.window_end,
        "state": str(member.state),
        "replaced_by": member.replaced_by,
        "replaced_at": member.replaced_at,
    }


class CampaignSql:
    """The campaign part of the ``StoreTransaction`` port."""

    _conn: Connection

    def add_campaign(self, record: CampaignRecord) -> None:
        """Keep a new campaign."""
        self._conn.execute(
            insert(s.campaigns).values(
                campaign_id=record.campaign_id,
                name=record.name,
                selector=record.selector,
                deadline=record.deadline,
                max_rate=repr(record.max_rate),
                status=str(record.status),
                created_at=record.created_at,
                created_by=record.created_by,
                target_ca=record.target_ca,
                profile=record.profile,
                key_type=None if record.key_type is None else str(record.key_type),
                revoke_after=record.revoke_after,
                members=record.members,
            )
        )

    def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        """A campaign by ID."""
        row = self._conn.execute(
            select(s.campaigns).where(s.campaigns.c.campaign_id == campaign_id)
        ).first()
        return None if row is None else _campaign(row)

    def list_campaigns(self) -> list[CampaignRecord]:
        """Every campaign, newest first."""
        c = s.campaigns.c
        rows = self._conn.execute(select(s.campaigns).order_by(c.created_at.desc()))
        return [_campaign(row) for row in rows]

    def set_campaign_status(self, campaign_id: str, status: CampaignStatus) -> None:
        """Pause, resume, cancel or finish a campaign."""
        c = s.campaigns.c
        self._conn.execute(
            update(s.campaigns).where(c.campaign_id == campaign_id).values(status=str(status))
        )

    def add_campaign_members(self, members: list[CampaignMember]) -> None:
        """Keep the certificates a campaign replaces, with their windows."""
        for start in range(0, len(members), _INSERT_BATCH):
            batch = members[start : start + _INSERT_BATCH]
            self._conn.execute(insert(s.campaign_members), [_member_values(m) for m in batch])

    def membership(self, ca_name: str, serial: str) -> tuple[CampaignRecord, CampaignMember] | None:
        """The active campaign that replaces this certificate, and its member row, if any."""
        m, c = s.campaign_members.c, s.campaigns.c
        row = self._conn.execute(
            select(s.campaign_members)
            .join(s.campaigns, c.campaign_id == m.campaign_id)
            .where(
                m.ca_name == ca_name,
                m.serial == serial,
                c.status == str(CampaignStatus.ACTIVE),
            )
            .order_by(c.created_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        member = _member(row)
        campaign = self.get_campaign(member.campaign_id)
        assert campaign is not None
        return campaign, member

    def set_member_state(
        self,
        member: CampaignMember,
        state: MemberState,
        *,
        replaced_by: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record where a member stands (and what replaced it, when)."""
        m = s.campaign_members.c
        key = and_(
            m.campaign_id == member.campaign_id,
            m.ca_name == member.ca_name,
            m.serial == member.serial,
        )
        values: dict[str, object] = {"state": str(state)}
        if replaced_by is not None:
            values.update(replaced_by=replaced_by, replaced_at=at)
        self._conn.execute(update(s.campaign_members).where(key).values(values))

    def campaign_members(
        self, campaign_id: str, state: MemberState | None = None, limit: int = 1000
    ) -> list[CampaignMember]:
        """A campaign's members (in one state), by window."""
        m = s.campaign_members.c
        stmt = select(s.campaign_members).where(m.campaign_id == campaign_id)
        if state is not None:
            stmt = stmt.where(m.state == str(state))
        stmt = stmt.order_by(m.window_start, m.serial).limit(max(1, limit))
        return [_member(row) for row in self._conn.execute(stmt)]

    def member_counts(self, campaign_id: str) -> dict[MemberState, int]:
        """How many members of a campaign are in each state."""
        m = s.campaign_members.c
        rows = self._conn.execute(
            select(m.state, func.count()).where(m.campaign_id == campaign_id).group_by(m.state)
        )
        counts = dict.fromkeys(MemberState, 0)
        for state, count in rows:
            counts[MemberState(state)] = int(count)
        return counts

    def replacement_times(self, campaign_id: str) -> list[datetime]:
        """When each replaced member was replaced, in order."""
        m = s.campaign_members.c
        rows = self._conn.execute(
            select(m.replaced_at)
            .where(m.campaign_id == campaign_id, m.replaced_at.is_not(None))
            .order_by(m.replaced_at)
        )
        return [row[0] for row in rows]
