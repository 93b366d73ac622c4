"""``iotpki mqtt``: claim CAs and claim certificates for provisioning over MQTT, and
``iotpki mqtt-provisioner``: the provisioning service on its own."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from iotpki.cli.context import console, installation
from iotpki.cli.tables import JSON_OPTION, WIDE_OPTION, Column, print_records
from iotpki.core.models import BootstrapKind
from iotpki.core.policy import parse_duration
from iotpki.errors import ConfigError
from iotpki.server import enrollment
from iotpki.services.mqtt import issue_claim, provisioning_service

__all__ = ["app", "provisioner"]

app = typer.Typer(help="Provisioning over MQTT: claim CAs and claim certificates.")
claim_ca = typer.Typer(
    help="CAs whose batch claim certificates may enroll devices.", no_args_is_help=True
)
claim = typer.Typer(help="Claim certificates for production batches.", no_args_is_help=True)
app.add_typer(claim_ca, name="claim-ca")
app.add_typer(claim, name="claim")

_COLUMNS = (
    Column("name", "name"),
    Column("status", "status"),
    Column("policy", "policy"),
    Column("profile", "profile"),
    Column("device IDs", "device_pattern"),
    Column("approval", "approval"),
    Column("subject", "subject", wrap=True),
)


@claim_ca.command("add")
def claim_ca_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="a name for this claim CA"),
    ca: str = typer.Option(..., "--ca", help="the CA here that issues the claim certificates"),
    device_pattern: str = typer.Option(
        ..., "--device-pattern", help="regular expression the device IDs must match in full"
    ),
    policy: str = typer.Option("any", help="any: any matching ID; registered: registry only"),
    profile: str | None = typer.Option(None, help="profile its devices get [default: device]"),
    approval: bool = typer.Option(False, help="enrollments wait for an operator's approval"),
) -> None:
    """Let a CA's claim certificates enroll devices whose IDs match a pattern."""
    inst = installation(ctx)
    certificate = inst.authority.get_ca(ca).certificate
    record = enrollment(inst).add_bootstrap_ca(
        name,
        certificate,
        enroll_policy=policy,
        profile=profile,
        approval=approval,
        kind=BootstrapKind.CLAIM,
        device_pattern=device_pattern,
        actor="cli",
    )
    console.print(f"claim CA {record.name} ({record.enroll_policy}) for IDs {device_pattern!r}")


@claim_ca.command("list")
def claim_ca_list(
    ctx: typer.Context, wide: bool = WIDE_OPTION, as_json: bool = JSON_OPTION
) -> None:
    """The registered claim CAs."""
    rows = [
        {
            "name": r.name,
            "status": str(r.status),
            "policy": str(r.enroll_policy),
            "profile": r.profile or "device",
            "device_pattern": r.device_pattern,
            "approval": "yes" if r.approval else "no",
            "subject": r.certificate.subject.rfc4514_string(),
        }
        for r in enrollment(installation(ctx)).list_bootstrap_cas()
        if r.kind is BootstrapKind.CLAIM
    ]
    print_records(rows, _COLUMNS, wide=wide, as_json=as_json)


@claim_ca.command("revoke")
def claim_ca_revoke(ctx: typer.Context, name: str) -> None:
    """Stop every claim certificate of a claim CA from enrolling."""
    enrollment(installation(ctx)).revoke_bootstrap_ca(name, actor="cli")
    console.print(f"claim CA {name} revoked")


@claim.command("issue")
def claim_issue(
    ctx: typer.Context,
    batch: str = typer.Argument(..., help="the production batch (the certificate's CN)"),
    ca: str = typer.Option(..., "--ca", help="the claim CA that issues it"),
    out: Path = typer.Option(..., "--out", help="directory for claim.pem and claim.key"),
    lifetime: str = typer.Option("365d", help="how long the batch may enroll"),
) -> None:
    """A claim certificate and key for a batch's firmware image (revoke it with
    ``iotpki revoke`` to stop the batch)."""
    issued = issue_claim(
        installation(ctx), batch, ca, out, actor="cli", lifetime=parse_duration(lifetime)
    )
    console.print(
        f"claim certificate {issued.record.serial} for batch {batch} in {out}", soft_wrap=True
    )


def provisioner(ctx: typer.Context) -> None:
    """Serve provisioning over MQTT (``[mqtt]`` settings) until SIGINT or SIGTERM."""
    logging.getLogger("iotpki").setLevel(logging.INFO)
    inst = installation(ctx)
    if not inst.is_initialised():
        raise ConfigError("the installation is not initialised: start `iotpki serve` first")
    service = provisioning_service(inst, enrollment(inst))
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    service.start()
    print(f"provisioning over MQTT via {inst.settings.mqtt.broker_url}", flush=True)
    try:
        stopped.wait()
    finally:
        service.stop()
    print("stopped", flush=True)
