"""``iotpki est``: bootstrap CAs, the device registry, enrollment secrets and approvals."""

from __future__ import annotations

from pathlib import Path

import typer

from iotpki.cli.context import console, installation, read_file
from iotpki.core.encoding import load_certificate
from iotpki.core.enrollment import Enrollment
from iotpki.core.policy import parse_duration
from iotpki.server import enrollment

__all__ = ["app"]

app = typer.Typer(help="EST enrollment: bootstrap CAs, devices, secrets, approvals.")
bootstrap = typer.Typer(help="Manufacturer CAs whose IDevIDs may enroll.", no_args_is_help=True)
device = typer.Typer(help="The device registry.", no_args_is_help=True)
request = typer.Typer(help="Enrollments waiting for approval.", no_args_is_help=True)
app.add_typer(bootstrap, name="bootstrap-ca")
app.add_typer(device, name="device")
app.add_typer(request, name="request")


def _enrollment(ctx: typer.Context) -> Enrollment:
    return enrollment(installation(ctx))


@bootstrap.command("add")
def bootstrap_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="a name for this CA"),
    certificate: Path = typer.Argument(..., help="the CA certificate (PEM or DER)"),
    policy: str = typer.Option("registered", help="registered: bound devices only; any"),
    profile: str | None = typer.Option(None, help="profile its devices get"),
    approval: bool = typer.Option(False, help="enrollments wait for approval"),
) -> None:
    """Trust a manufacturer CA's IDevIDs for enrollment."""
    record = _enrollment(ctx).add_bootstrap_ca(
        name,
        load_certificate(read_file(certificate)),
        enroll_policy=policy,
        profile=profile,
        approval=approval,
        actor="cli",
    )
    console.print(
        f"bootstrap CA {record.name} ({record.enroll_policy}) sha256 {record.fingerprint}"
    )


@bootstrap.command("list")
def bootstrap_list(ctx: typer.Context) -> None:
    """The registered bootstrap CAs."""
    for record in _enrollment(ctx).list_bootstrap_cas():
        subject = record.certificate.subject.rfc4514_string()
        print(f"{record.name}\t{record.status}\t{record.enroll_policy}\t{subject}")


@bootstrap.command("revoke")
def bootstrap_revoke(ctx: typer.Context, name: str) -> None:
    """Stop trusting a bootstrap CA."""
    _enrollment(ctx).revoke_bootstrap_ca(name, actor="cli")
    console.print(f"bootstrap CA {name} revoked")


@device.command("register")
def device_register(
    ctx: typer.Context,
    device_id: str,
    bootstrap_ca: str | None = typer.Option(None, help="bootstrap CA of its IDevID"),
    idevid: str | None = typer.Option(None, help="its IDevID's serialNumber (or CN)"),
) -> None:
    """Add a device to the registry, optionally bound to its IDevID."""
    _enrollment(ctx).register_device(
        device_id, bootstrap_ca=bootstrap_ca, idevid=idevid, actor="cli"
    )
    console.print(f"device {device_id} registered")


@device.command("disable")
def device_disable(ctx: typer.Context, device_id: str) -> None:
    """Refuse the device's enrollments and renewals."""
    _enrollment(ctx).set_device_status(device_id, "disabled", actor="cli")
    console.print(f"device {device_id} disabled")


@device.command("enable")
def device_enable(ctx: typer.Context, device_id: str) -> None:
    """Allow the device to enroll and renew again."""
    _enrollment(ctx).set_device_status(device_id, "active", actor="cli")
    console.print(f"device {device_id} enabled")


@app.command("secret")
def secret(
    ctx: typer.Context,
    device_id: str,
    lifetime: str = typer.Option("7d", help="how long the secret is valid"),
    profile: str | None = typer.Option(None, help="the only profile it enrolls for"),
    approval: bool = typer.Option(False, help="the enrollment waits for approval"),
) -> None:
    """Create a one-time enrollment secret for a device; it is printed once."""
    value, record = _enrollment(ctx).create_secret(
        device_id,
        lifetime=parse_duration(lifetime),
        profile=profile,
        approval=approval,
        actor="cli",
    )
    console.print(f"secret {record.secret_id} for {device_id}, expires {record.expires_at}:")
    print(value)


@request.command("list")
def request_list(
    ctx: typer.Context, status: str = typer.Option("pending", help="pending, approved, ...")
) -> None:
    """Enrollment requests."""
    for record in _enrollment(ctx).list_approvals(None if status == "all" else status):
        print(f"{record.request_id}\t{record.status}\t{record.device_id}\t{record.profile}")


@request.command("approve")
def request_approve(ctx: typer.Context, request_id: str) -> None:
    """Approve a pending enrollment."""
    _enrollment(ctx).decide(request_id, approve=True, actor="cli")
    console.print(f"request {request_id} approved")


@request.command("reject")
def request_reject(ctx: typer.Context, request_id: str) -> None:
    """Reject a pending enrollment."""
    _enrollment(ctx).decide(request_id, approve=False, actor="cli")
    console.print(f"request {request_id} rejected")
