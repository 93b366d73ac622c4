"""``iotpki ca rollover|retire|renew-issuing``: replace a root or an issuing CA with overlap."""

from __future__ import annotations

import typer

from iotpki.cli.context import console, installation
from iotpki.core.models import KeyAlgorithm
from iotpki.core.policy import parse_duration
from iotpki.core.rollover import renew_issuing, retire_root, roll_root
from iotpki.services.installation import Installation
from iotpki.services.revocation import RevocationService

__all__ = ["renew_issuing_command", "retire", "rollover"]


def _publish(inst: Installation, names: list[str]) -> None:
    """First CRLs of the new CAs, so relying parties that check CRLs accept their certificates."""
    service = RevocationService(inst)
    for name in names:
        service.publisher.generate(name, "full", actor="cli")
    service.reload_crls()


def rollover(
    ctx: typer.Context,
    old_root: str = typer.Argument(..., help="The root CA to replace"),
    new: str = typer.Option(..., "--new", help="Name of the new root CA"),
    overlap: str = typer.Option("30d", help="How long both roots are trusted"),
    cn: str | None = typer.Option(None, help="commonName [default: the old root's]"),
    algorithm: str | None = typer.Option(None, help="Key algorithm [default: the old root's]"),
    lifetime: str | None = typer.Option(None, help="Lifetime [default: the old root's]"),
) -> None:
    """New root, cross-certificates both ways, and a successor for each issuing CA."""
    inst = installation(ctx)
    done = roll_root(
        inst.authority,
        old_root,
        new_root=new,
        overlap=parse_duration(overlap),
        actor="cli",
        common_name=cn,
        algorithm=KeyAlgorithm(algorithm) if algorithm else None,
        lifetime=parse_duration(lifetime) if lifetime else None,
    )
    _publish(inst, [new, *done.successors.values()])
    console.print(
        f"new root {done.new_root}; cross-certificates {done.new_with_old} (new key, "
        f"signed by the old root) and {done.old_with_new} (old key, signed by the new)"
    )
    for old, successor in done.successors.items():
        console.print(f"issuing CA {old} retired; {successor} issues from now on")
    console.print(
        f"both roots are served from EST cacerts until {done.overlap_ends:%Y-%m-%d %H:%M}Z; "
        f"then run `iotpki ca retire {old_root}`"
    )


def retire(
    ctx: typer.Context,
    old_root: str = typer.Argument(..., help="The rolled-over root"),
    force: bool = typer.Option(False, help="Retire before the overlap has ended"),
) -> None:
    """After the overlap: retire the old root and its cross-certificates."""
    retired = retire_root(installation(ctx).authority, old_root, actor="cli", force=force)
    console.print(f"retired: {', '.join(retired)}")


def renew_issuing_command(
    ctx: typer.Context,
    old: str = typer.Argument(..., help="The issuing CA nearing expiry"),
    new: str = typer.Option(..., "--new", help="Name of its successor"),
    lifetime: str | None = typer.Option(None, help="Lifetime [default: the old CA's]"),
) -> None:
    """A successor issuing CA with overlapping validity; the old one retires from issuing."""
    inst = installation(ctx)
    renew_issuing(
        inst.authority,
        old,
        new=new,
        actor="cli",
        lifetime=parse_duration(lifetime) if lifetime else None,
    )
    _publish(inst, [new])
    console.print(f"{new} issues from now on; {old} is retired and keeps publishing CRLs")
