"""Rotation campaigns: move a set of certificates to a new CA, profile or key type before a
deadline, at a rate the system holds.

Creating a campaign selects the valid certificates its filters match and gives each a renewal
window. The windows start one after the other, at least ``1 / max_rate`` seconds apart (wider
when the deadline allows), in an order set by a hash of the serial so that a batch of devices
does not renew together; the last starts by 90 % of the time to the deadline, leaving the rest
for retries, and each lasts at least 15 minutes, never past the deadline. Renewal information
(ACME ARI, and the agent's check on each wake) hands out these windows; a member's renewal,
whatever protocol carries it, is issued under the campaign's target
(:mod:`iotpki.core.campaign_rules`). At the deadline, what was not replaced is reported as
missed and, with ``revoke_after``, revoked as superseded. Every step is audited.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from iotpki.core.authority import Authority
from iotpki.core.keytypes import parse_key_type
from iotpki.core.models import (
    CAKind,
    CampaignMember,
    CampaignRecord,
    CampaignStatus,
    CAStatus,
    CertificateQuery,
    CertificateRecord,
    CertStatus,
    KeyAlgorithm,
    KeyType,
    MemberState,
    RevocationReason,
)
from iotpki.core.times import parse_time
from iotpki.errors import ConfigError, Conflict, NotFound, PolicyViolation, RequestError

__all__ = ["SELECT_KEYS", "Campaigns", "Progress", "Selection", "parse_selection"]

SELECT_KEYS = (
    "ca",
    "profile",
    "key_type",
    "device_id",
    "device_prefix",
    "issued_before",
    "serial",
)
_SPREAD = 0.9  # the windows end by this fraction of the time to the deadline
_MIN_WINDOW = timedelta(minutes=15)  # an agent that wakes every few minutes meets its window
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Selection:
    """The ``key=value`` filters that pick a campaign's certificates."""

    ca: str | None = None
    profile: str | None = None
    key_type: str | None = None
    device_id: str | None = None
    device_prefix: str | None = None
    issued_before: datetime | None = None
    serial: str | None = None  # one certificate (a mis-issuance to replace)

    def matches(self, record: CertificateRecord) -> bool:
        """Whether a certificate (already known valid) is selected."""
        issued = record.issued_at or record.not_before
        return (
            (self.key_type is None or _key_type_of(record) == self.key_type)
            and (
                self.device_prefix is None
                or (record.device_id or "").startswith(self.device_prefix)
            )
            and (self.issued_before is None or issued < self.issued_before)
            and (self.serial is None or record.serial == self.serial)
            and (self.profile is None or record.profile == self.profile)
            and (self.device_id is None or record.device_id == self.device_id)
        )


def _key_type_of(record: CertificateRecord) -> str:
    try:
        return str(KeyAlgorithm(record.key_algorithm).key_type)
    except ValueError:  # an algorithm iotpki has no name for: compare it as it is
        return record.key_algorithm


def _key_type(text: str) -> KeyType:
    try:
        return parse_key_type(text)
    except ConfigError as exc:  # a request's word, not a setting's
        raise RequestError(exc.message) from None


def _moment(text: str) -> datetime:
    """A day (``2026-12-01``: its start, UTC) or an ISO 8601 time with its zone."""
    if len(text) == 10:
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            pass
    return parse_time(text, "issued_before")


def parse_selection(text: str) -> Selection:
    """``ca=issuing profile=device key_type=p256 device_prefix=plant-a- issued_before=...``."""
    values: dict[str, object] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep or not value or key not in SELECT_KEYS:
            raise RequestError(f"a filter is key=value with key one of {', '.join(SELECT_KEYS)}")
        if key in values:
            raise RequestError(f"the filter {key} is given twice")
        if key == "issued_before":
            values[key] = _moment(value)
        elif key == "key_type":
            values[key] = str(_key_type(value))
        elif key == "serial":
            values[key] = value.lower().removeprefix("0x").lstrip("0") or "0"
        else:
            values[key] = value
    if not values:
        raise RequestError("select at least one filter (e.g. ca=issuing)")
    return Selection(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a campaign stands now."""

    campaign: CampaignRecord
    counts: dict[MemberState, int]
    expected: int  # members whose window has ended by now: replaced by now if on schedule
    recent_rate: float  # replacements per second over the last ten minutes

    @property
    def behind(self) -> bool:
        """Fewer replaced than the windows that have ended (and the campaign still runs)."""
        done = self.counts[MemberState.REPLACED]
        return self.campaign.status is CampaignStatus.ACTIVE and done < self.expected


class Campaigns:
    """Create, steer and finish rotation campaigns over one authority."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self._store = authority.store

    # -- creation -----------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        select: str,
        deadline: datetime,
        actor: str,
        max_rate: float = 1.0,
        target_ca: str | None = None,
        profile: str | None = None,
        key_type: str | None = None,
        revoke_after: bool = False,
    ) -> CampaignRecord:
        """A campaign over the valid certificates ``select`` matches, with their windows."""
        now = self.authority.clock.now()
        selection = parse_selection(select)
        if not 0 < max_rate <= 10_000:
            raise RequestError("max_rate is renewals per second, above 0 and at most 10000")
        if deadline <= now:
            raise RequestError("the deadline must be in the future")
        if target_ca is not None:
            ca = self.authority.get_ca(target_ca)
            if ca.status is not CAStatus.ACTIVE or ca.kind is not CAKind.ISSUING:
                raise PolicyViolation(f"the target CA {target_ca} is not an active issuing CA")
        if profile is not None:
            self.authority.profile(profile)
        wanted = None if key_type is None else _key_type(key_type)
        records = sorted(self._select(selection, now), key=_spread_order)
        if not records:
            raise NotFound("no valid certificate matches the selection")
        span = (deadline - now) * _SPREAD
        needed = timedelta(seconds=len(records) / max_rate)
        spacing = max(timedelta(seconds=1 / max_rate), span / len(records))
        if needed > span:
            raise PolicyViolation(
                f"{len(records)} certificates at {max_rate}/s need {needed}; the deadline "
                f"leaves {span} (90 % of the time to it): raise max_rate or move the deadline",
                certificates=len(records),
            )
        width = max(spacing, _MIN_WINDOW)
        campaign = CampaignRecord(
            campaign_id=secrets.token_hex(8),
            name=name,
            selector=select,
            deadline=deadline,
            max_rate=max_rate,
            status=CampaignStatus.ACTIVE,
            created_at=now,
            created_by=actor,
            target_ca=target_ca,
            profile=profile,
            key_type=wanted,
            revoke_after=revoke_after,
            members=len(records),
        )
        members = [
            CampaignMember(
                campaign_id=campaign.campaign_id,
                ca_name=r.ca_name,
                serial=r.serial,
                device_id=r.device_id,
                window_start=now + spacing * i,
                window_end=min(now + spacing * i + width, deadline),
                state=MemberState.PENDING,
            )
            for i, r in enumerate(records)
        ]
        with self._store.transaction() as tx:
            tx.add_campaign(campaign)
            tx.add_campaign_members(members)
            tx.append_audit(now, actor, "campaign.created", campaign.campaign_id, _json(campaign))
        return campaign

    def _select(self, selection: Selection, now: datetime) -> Iterator[CertificateRecord]:
        """Valid, unexpired certificates the selection matches (paged through the store)."""
        if selection.serial is not None:
            with self._store.transaction(readonly=True) as tx:
                one = tx.get_certificate(selection.ca, selection.serial)
            if one is not None and one.status is CertStatus.VALID and one.not_after > now:
                yield from (r for r in (one,) if selection.matches(r))
            return
        offset = 0
        while True:
            query = CertificateQuery(
                status=CertStatus.VALID,
                ca_name=selection.ca,
                profile=selection.profile,
                device_id=selection.device_id,
                include_expired=False,
                limit=_PAGE,
                offset=offset,
            )
            with self._store.transaction(readonly=True) as tx:
                page = tx.list_certificates(query, now)
            yield from (r for r in page if selection.matches(r))
            if len(page) < _PAGE:
                return
            offset += _PAGE

    # -- steering -----------------------------------------------------------------------------

    def get(self, campaign_id: str) -> CampaignRecord:
        """A campaign by ID."""
        with self._store.transaction(readonly=True) as tx:
            found = tx.get_campaign(campaign_id)
        if found is None:
            raise NotFound(f"no campaign {campaign_id!r}")
        return found

    def all(self) -> list[CampaignRecord]:
        """Every campaign, newest first."""
        with self._store.transaction(readonly=True) as tx:
            return tx.list_campaigns()

    def set_status(self, campaign_id: str, status: CampaignStatus, *, actor: str) -> CampaignRecord:
        """Pause (windows no longer handed out), resume, or cancel a campaign."""
        allowed = {
            CampaignStatus.PAUSED: (CampaignStatus.ACTIVE,),
            CampaignStatus.ACTIVE: (CampaignStatus.PAUSED,),
            CampaignStatus.CANCELLED: (CampaignStatus.ACTIVE, CampaignStatus.PAUSED),
        }
        if status not in allowed:
            raise RequestError("a campaign is paused, resumed (active) or cancelled")
        now = self.authority.clock.now()
        with self._store.transaction() as tx:
            campaign = tx.get_campaign(campaign_id)
            if campaign is None:
                raise NotFound(f"no campaign {campaign_id!r}")
            if campaign.status not in allowed[status]:
                raise Conflict(f"campaign {campaign.name} is {campaign.status}")
            tx.set_campaign_status(campaign_id, status)
            tx.append_audit(now, actor, f"campaign.{status}", campaign_id, {"name": campaign.name})
        return replace(campaign, status=status)

    def progress(self, campaign_id: str) -> Progress:
        """Counts per state, how many should be replaced by now, and the recent rate."""
        campaign = self.get(campaign_id)
        now = self.authority.clock.now()
        with self._store.transaction(readonly=True) as tx:
            counts = tx.member_counts(campaign_id)
            times = tx.replacement_times(campaign_id)
        expected = _ended_windows(campaign, now)
        window = timedelta(minutes=10)
        recent = sum(1 for t in times if t > now - window)
        return Progress(campaign, counts, expected, recent / window.total_seconds())

    def burndown(
        self, campaign_id: str, periods: int = 24
    ) -> tuple[list[tuple[datetime, int]], list[int]]:
        """What remained at the end of each period so far, and what the windows plan to leave
        at the end of every period up to the deadline."""
        campaign = self.get(campaign_id)
        with self._store.transaction(readonly=True) as tx:
            times = tx.replacement_times(campaign_id)
        now = self.authority.clock.now()
        length = (campaign.deadline - campaign.created_at) / periods
        remaining, planned = [], []
        done = 0
        for i in range(1, periods + 1):
            end = campaign.created_at + length * i
            planned.append(campaign.members - _ended_windows(campaign, end))
            if end - length > now:
                continue
            while done < len(times) and times[done] <= end:
                done += 1
            remaining.append((end, campaign.members - done))
        return remaining, planned

    def silent(self, campaign_id: str, limit: int = 50) -> list[CampaignMember]:
        """Members whose window has ended and that have not renewed (devices not heard from)."""
        now = self.authority.clock.now()
        waiting = self.members(campaign_id, MemberState.PENDING, limit=10 * limit)
        return [m for m in waiting if m.window_end < now][:limit]

    def members(
        self, campaign_id: str, state: MemberState | None = None, limit: int = 1000
    ) -> list[CampaignMember]:
        """A campaign's members (in one state), by window."""
        with self._store.transaction(readonly=True) as tx:
            return tx.campaign_members(campaign_id, state, limit)

    def _pending(self, record: CertificateRecord) -> tuple[CampaignRecord, CampaignMember] | None:
        with self._store.transaction(readonly=True) as tx:
            found = tx.membership(record.ca_name, record.serial)
        if found is None or found[1].state is not MemberState.PENDING:
            return None
        return found

    def window(self, record: CertificateRecord) -> tuple[datetime, datetime, str] | None:
        """The renewal window an active campaign gives this certificate, and its name."""
        found = self._pending(record)
        if found is None:
            return None
        campaign, member = found
        return member.window_start, member.window_end, campaign.name

    def key_type_for(self, record: CertificateRecord) -> KeyType | None:
        """The key type an active campaign asks this certificate's renewal for, if any."""
        found = self._pending(record)
        return None if found is None else found[0].key_type

    # -- the deadline -------------------------------------------------------------------------

    def finish_due(self, *, actor: str = "system:campaigns") -> list[CampaignRecord]:
        """Finish every active or paused campaign whose deadline has passed: its pending members
        are missed (and revoked as superseded with ``revoke_after``)."""
        now = self.authority.clock.now()
        finished = []
        for campaign in self.all():
            if campaign.status not in (CampaignStatus.ACTIVE, CampaignStatus.PAUSED):
                continue
            if campaign.deadline > now:
                continue
            finished.append(self._finish(campaign, now, actor))
        return finished

    def _finish(self, campaign: CampaignRecord, now: datetime, actor: str) -> CampaignRecord:
        missed = revoked = 0
        while True:
            page = self.members(campaign.campaign_id, MemberState.PENDING, _PAGE)
            if not page:
                break
            for member in page:
                state = MemberState.MISSED
                if campaign.revoke_after and self._still_valid(member):
                    self.authority.revoke(
                        member.serial,
                        ca=member.ca_name,
                        reason=RevocationReason.SUPERSEDED,
                        actor=actor,
                    )
                    state = MemberState.REVOKED
                    revoked += 1
                else:
                    missed += 1
                with self._store.transaction() as tx:
                    tx.set_member_state(member, state)
        with self._store.transaction() as tx:
            tx.set_campaign_status(campaign.campaign_id, CampaignStatus.FINISHED)
            counts = tx.member_counts(campaign.campaign_id)
            tx.append_audit(
                now,
                actor,
                "campaign.finished",
                campaign.campaign_id,
                {
                    "name": campaign.name,
                    "replaced": counts[MemberState.REPLACED],
                    "missed": missed,
                    "revoked": revoked,
                },
            )
        return replace(campaign, status=CampaignStatus.FINISHED)

    def _still_valid(self, member: CampaignMember) -> bool:
        record = self.authority.get(member.serial, ca=member.ca_name)
        return record.status is CertStatus.VALID


def _spread_order(record: CertificateRecord) -> bytes:
    return hashlib.sha256(f"{record.ca_name}/{record.serial}".encode()).digest()


def _ended_windows(campaign: CampaignRecord, now: datetime) -> int:
    """How many windows have ended by ``now`` (windows follow each other evenly)."""
    span = (campaign.deadline - campaign.created_at) * _SPREAD
    if campaign.members == 0 or now <= campaign.created_at:
        return 0
    spacing = span / campaign.members
    return min(campaign.members, int((now - campaign.created_at) / spacing))


def _json(campaign: CampaignRecord) -> dict[str, object]:
    return {
        "name": campaign.name,
        "select": campaign.selector,
        "deadline": campaign.deadline.isoformat(),
        "max_rate": campaign.max_rate,
        "target_ca": campaign.target_ca,
        "profile": campaign.profile,
        "key_type": None if campaign.key_type is None else str(campaign.key_type),
        "revoke_after": campaign.revoke_after,
        "members": campaign.members,
    }
