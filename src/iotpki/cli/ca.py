"""``iotpki init`` and ``iotpki ca ...``: the CA hierarchy, including an offline root."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.cli.context import console, installation, read_file
from iotpki.cli.tables import (
    JSON_OPTION,
    WIDE_OPTION,
    Column,
    print_json,
    print_records,
    short_date,
    short_subject,
    short_time,
)
from iotpki.core.access import create_token
from iotpki.core.authority import serial_hex
from iotpki.core.csr import load_csr
from iotpki.core.encoding import load_certificate, pem
from iotpki.core.models import CAKind, CARecord, KeyAlgorithm, Role
from iotpki.core.policy import parse_duration
from iotpki.errors import ConfigError

__all__ = ["app", "ca_json", "init"]

app = typer.Typer(help="Manage the CA hierarchy.", no_args_is_help=True)

_ALGORITHMS = ", ".join(a.value for a in KeyAlgorithm)


def _algorithm(value: str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm(value.lower())
    except ValueError:
        raise ConfigError(f"unknown algorithm {value!r}; choose from {_ALGORITHMS}") from None


def _write(path: Path | None, data: bytes) -> None:
    if path is None:
        typer.echo(data.decode(), nl=False)
    else:
        path.write_bytes(data)
        console.print(f"wrote {path}")


def init(
    ctx: typer.Context,
    root_name: str = typer.Option("root", help="Name of the root CA"),
    issuing_name: str = typer.Option("issuing", help="Name of the issuing CA"),
    root_cn: str = typer.Option("iotpki Root CA", help="Root CA common name"),
    issuing_cn: str = typer.Option("iotpki Issuing CA", help="Issuing CA common name"),
    algorithm: str = typer.Option("p256", help=f"Issuing CA key: {_ALGORITHMS}"),
    root_algorithm: str = typer.Option("p256", help="Root CA key algorithm"),
    root_lifetime: str = typer.Option("7300d", help="Root CA lifetime"),
    issuing_lifetime: str = typer.Option("1825d", help="Issuing CA lifetime"),
    backend: str | None = typer.Option(None, help="Key backend: file or pkcs11"),
    root_only: bool = typer.Option(False, help="Create only the root (an offline root machine)"),
) -> None:
    """Create the root CA and an issuing CA, and print an admin API token."""
    inst = installation(ctx, create=True)
    if inst.authority.list_cas():
        raise ConfigError(f"{inst.home} is initialised already; see `iotpki ca list`")
    chosen = backend or inst.settings.key_backend
    if root_only:
        inst.authority.create_root(
            root_name,
            common_name=root_cn,
            algorithm=_algorithm(root_algorithm),
            lifetime=parse_duration(root_lifetime),
            backend=chosen,
            actor="cli",
        )
    else:
        inst.initialise(
            root_name=root_name,
            issuing_name=issuing_name,
            root_cn=root_cn,
            issuing_cn=issuing_cn,
            root_algorithm=_algorithm(root_algorithm),
            issuing_algorithm=_algorithm(algorithm),
            root_lifetime=parse_duration(root_lifetime),
            issuing_lifetime=parse_duration(issuing_lifetime),
            backend=chosen,
        )
    token, _ = create_token(
        inst.store,
        inst.authority.clock,
        role=Role.ADMIN,
        description="created by init",
        actor="cli",
    )
    _print_cas(inst.authority.list_cas())
    console.print(f"initialised {inst.home}")
    console.print(f"admin API token (shown once): [bold]{token}[/bold]", highlight=False)


def ca_json(ca: CARecord, now: datetime) -> dict[str, object]:
    """One CA as a full JSON-ready record (``--json``)."""
    data: dict[str, object] = {
        "name": ca.name,
        "kind": ca.kind,
        "status": ca.status,
        "parent": ca.parent,
        "key_backend": ca.key_backend or "offline",
        "subject": "(pending)",
        "serial": None,
        "not_before": None,
        "not_after": None,
        "days_left": None,
    }
    if ca.certificate_der is not None:
        cert = ca.certificate
        data |= {
            "subject": cert.subject.rfc4514_string(),
            "serial": serial_hex(cert.serial_number),
            "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc,
            "days_left": (cert.not_valid_after_utc - now).days,
        }
    return data


_CA_COLUMNS = (
    Column("name", "name"),
    Column("kind", "kind"),
    Column("status", "status"),
    Column("parent", "parent"),
    Column("subject", "subject", short=(short_subject,), wrap=True),
    Column("expires", "not_after", short=(short_time, short_date)),
    Column("days left", "days_left"),
    Column("key", "key_backend"),
)


def _print_cas(cas: list[CARecord], *, wide: bool = False, as_json: bool = False) -> None:
    now = datetime.now(UTC)
    print_records([ca_json(ca, now) for ca in cas], _CA_COLUMNS, wide=wide, as_json=as_json)


@app.command("list")
def list_cas(ctx: typer.Context, wide: bool = WIDE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List the CAs with their status and expiry."""
    _print_cas(installation(ctx).authority.list_cas(), wide=wide, as_json=as_json)


@app.command("show")
def show(
    ctx: typer.Context,
    name: str,
    pem_out: bool = typer.Option(False, "--pem"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one CA (or print its certificate with --pem)."""
    inst = installation(ctx)
    ca = inst.authority.get_ca(name)
    if pem_out:
        typer.echo(pem([ca.certificate]).decode(), nl=False)
        return
    if as_json:
        print_json(ca_json(ca, datetime.now(UTC)))
        return
    _print_cas([ca])
    if ca.certificate_der is not None:
        cert = ca.certificate
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        console.print(f"serial {cert.serial_number:x}, pathLen {constraints.path_length}")
        chain = " -> ".join(c.subject.rfc4514_string() for c in inst.authority.chain(name))
        console.print(f"chain: {chain}")
        from iotpki.cli.crl import print_publication_status

        print_publication_status(inst, name)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    parent: str = typer.Option("root", help="Parent CA (its key must be here)"),
    cn: str | None = typer.Option(None, help="Common name [default: the name]"),
    algorithm: str = typer.Option("p256", help=f"Key algorithm: {_ALGORITHMS}"),
    lifetime: str = typer.Option("1825d"),
    backend: str | None = typer.Option(None, help="Key backend: file or pkcs11"),
) -> None:
    """Create another issuing CA (e.g. one per product line)."""
    inst = installation(ctx)
    inst.authority.create_issuing(
        name,
        parent=parent,
        common_name=cn or name,
        algorithm=_algorithm(algorithm),
        lifetime=parse_duration(lifetime),
        backend=backend or inst.settings.key_backend,
        actor="cli",
    )
    _print_cas([inst.authority.get_ca(name)])


@app.command("csr")
def csr(
    ctx: typer.Context,
    name: str,
    out: Path | None = typer.Option(None, "--out", help="Write the CSR here [default: stdout]"),
    cn: str | None = typer.Option(None, help="Common name [default: the name]"),
    algorithm: str = typer.Option("p256", help=f"Key algorithm: {_ALGORITHMS}"),
    backend: str | None = typer.Option(None, help="Key backend: file or pkcs11"),
) -> None:
    """Make a key and CSR for an issuing CA whose parent is an offline root."""
    inst = installation(ctx, create=True)
    request = inst.authority.create_ca_csr(
        name,
        common_name=cn or name,
        algorithm=_algorithm(algorithm),
        backend=backend or inst.settings.key_backend,
        actor="cli",
    )
    _write(out, request.public_bytes(serialization.Encoding.PEM))


@app.command("sign-csr")
def sign_csr(
    ctx: typer.Context,
    csr_file: Path,
    parent: str = typer.Option("root", help="The (root) CA that signs"),
    lifetime: str | None = typer.Option(None, help="Lifetime [default: the sub-ca profile's]"),
    out: Path | None = typer.Option(None, "--out", help="Write the certificate here"),
) -> None:
    """On the root's machine: sign an issuing CA's CSR."""
    inst = installation(ctx)
    cert = inst.authority.sign_ca_csr(
        load_csr(read_file(csr_file)),
        parent=parent,
        lifetime=parse_duration(lifetime) if lifetime else None,
        actor="cli",
    )
    _write(out, pem([cert]))


@app.command("import")
def import_ca(
    ctx: typer.Context,
    name: str,
    certificate: Path,
    parent_cert: Path | None = typer.Option(None, help="The parent's certificate (offline root)"),
    parent_name: str = typer.Option("root", help="Name to give the imported parent"),
) -> None:
    """Install the certificate the offline root signed for a pending CA."""
    inst = installation(ctx)
    inst.authority.import_ca(
        name,
        load_certificate(read_file(certificate)),
        parent_certificate=load_certificate(read_file(parent_cert)) if parent_cert else None,
        parent_name=parent_name,
        actor="cli",
    )
    _print_cas(
        [ca for ca in inst.authority.list_cas() if ca.kind is CAKind.ROOT or ca.name == name]
    )
