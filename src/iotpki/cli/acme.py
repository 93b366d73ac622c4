"""``iotpki acme``: EAB credentials (RFC 8555 section 7.3.4) and renewal-window overrides
(RFC 9773) for the ACME server."""

from __future__ import annotations

import json

import typer

from iotpki.cli.context import console, installation
from iotpki.cli.lookup import find_certificate
from iotpki.core.policy import parse_duration
from iotpki.core.times import parse_time
from iotpki.protocols.acme import eab, renewal
from iotpki.store.acme import SqlAcmeStore

__all__ = ["app"]

app = typer.Typer(help="Manage the ACME server.", no_args_is_help=True)


@app.command("eab-create")
def eab_create(
    ctx: typer.Context,
    tenant: str = typer.Option(..., "--tenant", help="who the account will belong to"),
    profile: str = typer.Option("server", "--profile", help="profile for dns/ip orders"),
    device_profile: str = typer.Option("device", "--device-profile"),
    device_pattern: list[str] = typer.Option(
        [], "--device-pattern", help="permanent-identifier glob the account may order, e.g. SN-*"
    ),
    description: str = typer.Option("", "--description"),
    lifetime: str | None = typer.Option(None, "--lifetime", help="e.g. 7d [default: none]"),
) -> None:
    """Create a single-use EAB credential; its HMAC key is printed once."""
    inst = installation(ctx)
    credential, key = eab.create(
        SqlAcmeStore(inst.store),
        now=inst.authority.clock.now(),
        actor="cli",
        profiles=inst.settings.resolved_profiles(),
        tenant=tenant,
        profile=profile,
        device_profile=device_profile,
        device_patterns=tuple(device_pattern),
        description=description,
        lifetime=parse_duration(lifetime) if lifetime else None,
    )
    console.print(f"EAB credential for tenant {tenant} (profile {profile}):")
    print(json.dumps({"kid": credential.key_id, "hmac_key": key}))


@app.command("eab-list")
def eab_list(ctx: typer.Context) -> None:
    """List EAB credentials (never their keys)."""
    inst = installation(ctx)
    with SqlAcmeStore(inst.store).transaction(readonly=True) as tx:
        items = [eab.credential_json(c) for c in tx.list_eab()]
    print(json.dumps(items, indent=2))


@app.command("eab-revoke")
def eab_revoke(ctx: typer.Context, key_id: str = typer.Argument(...)) -> None:
    """Withdraw an unused EAB credential."""
    inst = installation(ctx)
    eab.revoke(SqlAcmeStore(inst.store), key_id, now=inst.authority.clock.now(), actor="cli")
    console.print(f"revoked {key_id}")


@app.command("renew-early")
def renew_early(
    ctx: typer.Context,
    serial: str | None = typer.Option(None, "--serial", help="Serial or a unique prefix"),
    ca: str | None = typer.Option(None, "--ca"),
    profile: str | None = typer.Option(None, "--profile"),
    issued_before: str | None = typer.Option(None, "--issued-before", help="ISO 8601 with zone"),
    within: str = typer.Option("6h", "--within", help="length of the new renewal window"),
    explanation_url: str | None = typer.Option(None, "--explanation-url"),
) -> None:
    """Pull ARI renewal windows forward to [now, now + within] for matching certificates."""
    before = None if issued_before is None else parse_time(issued_before, "--issued-before")
    inst = installation(ctx)
    if serial is not None:
        found = find_certificate(inst, serial, ca)
        serial, ca = found.serial, found.ca_name
    override = renewal.advance(
        SqlAcmeStore(inst.store),
        now=inst.authority.clock.now(),
        actor="cli",
        serial=serial,
        ca_name=ca,
        profile=profile,
        issued_before=before,
        within=parse_duration(within),
        explanation_url=explanation_url,
    )
    print(json.dumps(renewal.override_json(override)))
