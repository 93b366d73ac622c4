"""``iotpki campaign``: rotation campaigns that move a set of certificates to a new CA, profile
or key type before a deadline, at a rate the system holds."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from iotpki.cli.context import console, installation
from iotpki.cli.tables import (
    JSON_OPTION,
    WIDE_OPTION,
    Column,
    print_details,
    print_records,
    short_time,
)
from iotpki.core.campaigns import SELECT_KEYS, Campaigns, Progress
from iotpki.core.models import CampaignRecord, CampaignStatus, MemberState
from iotpki.core.policy import parse_duration
from iotpki.core.times import parse_time
from iotpki.errors import RequestError

__all__ = ["app"]

app = typer.Typer(
    help="Rotation campaigns: re-issue a fleet before a deadline.", no_args_is_help=True
)

_COLUMNS = (
    Column("id", "id"),
    Column("name", "name"),
    Column("status", "status"),
    Column("deadline", "deadline", short=(short_time,)),
    Column("members", "members"),
    Column("replaced", "replaced"),
    Column("pending", "pending"),
    Column("missed", "missed"),
    Column("target", "target", wrap=True),
)


def _campaigns(ctx: typer.Context) -> Campaigns:
    return Campaigns(installation(ctx).authority)


def _deadline(text: str) -> datetime:
    """An ISO 8601 time with its zone, or a duration from now (``24h``, ``5d``)."""
    if text[:1].isdigit() and text[-1:] in "hdwm" and "-" not in text:
        return datetime.now(UTC) + parse_duration(text)
    return parse_time(text, "deadline")


def _rate(text: str) -> float:
    """``N/s``, ``N/min`` or ``N/h`` (or a bare number: per second)."""
    number, _, unit = text.partition("/")
    seconds = {"": 1, "s": 1, "min": 60, "h": 3600}.get(unit)
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if seconds is None or value <= 0:
        raise RequestError("--max-rate is N/s, N/min or N/h, e.g. 5/s")
    return value / seconds


def _row(progress: Progress) -> dict[str, object]:
    c, counts = progress.campaign, progress.counts
    target = ", ".join(
        f"{k} {v}"
        for k, v in (("CA", c.target_ca), ("profile", c.profile), ("key", c.key_type))
        if v
    )
    return {
        "id": c.campaign_id,
        "name": c.name,
        "status": str(c.status) + (" (behind)" if progress.behind else ""),
        "deadline": c.deadline,
        "members": c.members,
        "replaced": counts[MemberState.REPLACED],
        "pending": counts[MemberState.PENDING],
        "missed": counts[MemberState.MISSED] + counts[MemberState.REVOKED],
        "target": target or "-",
    }


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A name for the campaign"),
    select: str = typer.Option(
        ..., "--select", help=f"key=value filters, space-separated: {', '.join(SELECT_KEYS)}"
    ),
    deadline: str = typer.Option(..., help="ISO 8601 time with zone, or from now: 24h, 5d"),
    target_ca: str | None = typer.Option(None, help="Issue the renewals under this CA"),
    key_type: str | None = typer.Option(None, help="The renewals' key type (e.g. p256)"),
    profile: str | None = typer.Option(None, help="The renewals' profile"),
    max_rate: str = typer.Option("1/s", help="At most this many renewals: N/s, N/min, N/h"),
    revoke_after: bool = typer.Option(False, help="Revoke what is not replaced by the deadline"),
) -> None:
    """Select certificates and give each a renewal window before the deadline."""
    campaign = _campaigns(ctx).create(
        name=name,
        select=select,
        deadline=_deadline(deadline),
        target_ca=target_ca,
        key_type=key_type,
        profile=profile,
        max_rate=_rate(max_rate),
        revoke_after=revoke_after,
        actor="cli",
    )
    console.print(
        f"campaign {campaign.campaign_id} ({campaign.name}): {campaign.members} certificates "
        f"to replace by {campaign.deadline.isoformat()}",
        soft_wrap=True,
    )


@app.command("list")
def list_campaigns(
    ctx: typer.Context, wide: bool = WIDE_OPTION, as_json: bool = JSON_OPTION
) -> None:
    """Every campaign with its progress."""
    campaigns = _campaigns(ctx)
    rows = [_row(campaigns.progress(c.campaign_id)) for c in campaigns.all()]
    print_records(rows, _COLUMNS, wide=wide, as_json=as_json)


@app.command("show")
def show(ctx: typer.Context, campaign_id: str) -> None:
    """One campaign: its settings, progress, rate and the members not replaced yet."""
    campaigns = _campaigns(ctx)
    progress = campaigns.progress(campaign_id)
    c = progress.campaign
    row = _row(progress)
    print_details(
        [
            ("name", c.name),
            ("status", str(row["status"])),
            ("select", c.selector),
            ("deadline", c.deadline.isoformat()),
            ("max rate", f"{c.max_rate:g}/s"),
            ("target", str(row["target"])),
            ("revoke after", "yes" if c.revoke_after else "no"),
            ("members", str(c.members)),
            *((str(state), str(count)) for state, count in progress.counts.items()),
            ("due by now", str(progress.expected)),
            ("rate (10 min)", f"{progress.recent_rate:.3f}/s"),
        ]
    )
    waiting = campaigns.members(campaign_id, MemberState.PENDING, limit=20)
    if waiting:
        console.print("not replaced yet (first 20 by window):")
        for member in waiting:
            console.print(
                f"  {member.device_id or member.serial}  window "
                f"{member.window_start:%Y-%m-%d %H:%M} - {member.window_end:%H:%M}Z",
                highlight=False,
            )


def _steer(ctx: typer.Context, campaign_id: str, status: CampaignStatus) -> CampaignRecord:
    campaign = _campaigns(ctx).set_status(campaign_id, status, actor="cli")
    console.print(f"campaign {campaign.name} {status}")
    return campaign


@app.command("pause")
def pause(ctx: typer.Context, campaign_id: str) -> None:
    """Stop handing out the campaign's windows; its members renew as without it."""
    _steer(ctx, campaign_id, CampaignStatus.PAUSED)


@app.command("resume")
def resume(ctx: typer.Context, campaign_id: str) -> None:
    """Hand out the campaign's windows again."""
    _steer(ctx, campaign_id, CampaignStatus.ACTIVE)


@app.command("cancel")
def cancel(ctx: typer.Context, campaign_id: str) -> None:
    """End the campaign now; nothing is revoked."""
    _steer(ctx, campaign_id, CampaignStatus.CANCELLED)
