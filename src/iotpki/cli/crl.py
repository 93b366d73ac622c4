"""``iotpki crl show|publish``: the CRLs of the installation's CAs and of their partitions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.cli.context import console, installation
from iotpki.cli.tables import (
    JSON_OPTION,
    WIDE_OPTION,
    Column,
    print_records,
    short_date,
    short_time,
)
from iotpki.core.models import CertificateQuery
from iotpki.core.publication import CrlKind, CrlRecord, crl_url
from iotpki.errors import NotFound
from iotpki.services.installation import Installation
from iotpki.services.revocation import RevocationService, crl_file, partition_file

__all__ = ["app", "print_publication_status"]

app = typer.Typer(help="Show and publish certificate revocation lists.", no_args_is_help=True)

_KINDS: tuple[CrlKind, CrlKind] = ("full", "delta")


def _cas(service: RevocationService, ca: str | None) -> list[str]:
    names = service.publisher.signing_cas()
    if ca is None:
        return names
    if ca not in names:
        service.installation.authority.get_ca(ca)  # NotFound for an unknown name
        raise NotFound(f"CA {ca!r} has no key here: its CRLs are made where its key is", ca=ca)
    return [ca]


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


_COLUMNS = (
    Column("CA", "ca"),
    Column("partition", "partition"),
    Column("kind", "kind"),
    Column("number", "number"),
    Column("thisUpdate", "this_update", short=(short_time, short_date)),
    Column("nextUpdate", "next_update", short=(short_time, short_date)),
    Column("entries", "entries"),
    Column("bytes", "bytes"),
)
_WIDE_COLUMNS = (
    *_COLUMNS[:4],
    Column("base", "base"),
    *_COLUMNS[4:],
    Column("file", "file", wrap=True),
)
"""The base CRL number and the file: with ``--wide`` (and always in ``--json``)."""


def _records(
    records: list[tuple[str, CrlKind, CrlRecord | None]], inst: Installation
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for ca_name, kind, crl in records:
        partition = None if crl is None else crl.partition
        if partition is None:
            path = crl_file(inst.home, ca_name, kind)
        else:
            path = partition_file(inst.home, ca_name, partition, kind)
        if crl is None:
            rows.append({"ca": ca_name, "kind": kind, "number": "(none yet)"})
            continue
        rows.append(
            {
                "ca": ca_name,
                "partition": partition or "(CA-wide)",
                "kind": kind,
                "number": crl.number,
                "base": crl.base_number,
                "this_update": crl.this_update,
                "next_update": crl.next_update,
                "entries": crl.entries,
                "bytes": path.stat().st_size if path.is_file() else None,
                "file": str(path) if path.is_file() else "(not written)",
            }
        )
    return rows


@app.command("show")
def show(
    ctx: typer.Context,
    ca: str | None = typer.Option(None, "--ca", help="Only this CA"),
    delta: bool = typer.Option(False, "--delta", help="With --out: the delta CRL"),
    partition: str | None = typer.Option(
        None, "--partition", help="With --out / --pem: this CRL partition of --ca"
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the CRL (DER) of --ca here"),
    pem_out: bool = typer.Option(False, "--pem", help="Print the CRL of --ca as PEM"),
    wide: bool = WIDE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The latest complete and delta CRL of each CA and partition (or write one with --out)."""
    inst = installation(ctx)
    service = RevocationService(inst)
    names = _cas(service, ca)
    if out is not None or pem_out:
        if ca is None:
            raise NotFound("name the CA with --ca to print or write its CRL")
        kind: CrlKind = "delta" if delta else "full"
        if partition is None:
            crl = service.store.get_crl(ca, kind)
        else:
            crl = service.store.get_partition_crl(ca, partition, kind)
        if crl is None or crl.der is None:
            where = f"CA {ca!r}" if partition is None else f"partition {partition!r} of {ca!r}"
            raise NotFound(f"{where} has no {kind} CRL yet: run `iotpki crl publish`", ca=ca)
        if pem_out:
            parsed = x509.load_der_x509_crl(crl.der)
            typer.echo(parsed.public_bytes(serialization.Encoding.PEM).decode(), nl=False)
        if out is not None:
            out.write_bytes(crl.der)
            console.print(f"wrote {out}")
        return
    rows = [(n, k, service.store.get_crl(n, k, with_der=False)) for n in names for k in _KINDS]
    rows += [(n, r.kind, r) for n in names for r in service.store.partition_crls(n)]
    columns = _WIDE_COLUMNS if wide else _COLUMNS
    print_records(_records(rows, inst), columns, wide=wide, as_json=as_json)


@app.command("publish")
def publish(
    ctx: typer.Context, ca: str | None = typer.Option(None, "--ca", help="Only this CA")
) -> None:
    """Generate every CRL and partition CRL now, write the files and run the publish command."""
    inst = installation(ctx)
    service = RevocationService(inst)
    made: list[tuple[str, CrlKind, CrlRecord | None]] = []
    for name in _cas(service, ca):
        for kind in _KINDS:
            made.append((name, kind, service.publisher.generate(name, kind, actor="cli")))
        now = inst.authority.clock.now()
        service.partitions.expire(name, now)
        for partition in sorted(service.partitions.partitions(name, now)):
            for kind in _KINDS:
                record = service.partitions.generate(name, partition, kind, actor="cli")
                made.append((name, kind, record))
    service.reload_crls()
    service.reload_partitions()
    print_records(_records(made, inst), _COLUMNS)


def print_publication_status(inst: Installation, ca_name: str) -> None:
    """Revocation publication of one CA, for ``iotpki ca show``."""
    service = RevocationService(inst)
    if ca_name not in service.publisher.signing_cas():
        console.print("revocation: this CA's key is not held here; its CRLs are made offline")
        return
    now = inst.authority.clock.now()
    status = service.publisher.status(ca_name, now)
    rows: list[tuple[str, CrlKind, CrlRecord | None]] = []
    for kind in _KINDS:
        record = status.get(kind)
        rows.append((ca_name, kind, record if isinstance(record, CrlRecord) else None))
    print_records(_records(rows, inst), _COLUMNS)
    base = service.config.public_base_url
    console.print(
        f"CRL: {crl_url(base, ca_name, 'full')} (delta: {crl_url(base, ca_name, 'delta')})"
    )
    pending = status.get("pending_since")
    due = status.get("due") or []
    if pending:
        console.print(f"revocations not yet in a CRL since {_when(pending)}")  # type: ignore[arg-type]
    if due:
        console.print(f"due now: {', '.join(due)}")  # type: ignore[arg-type]
    responders = inst.authority.search(
        CertificateQuery(ca_name=ca_name, profile="ocsp-signer", limit=1)
    )
    if responders:
        latest = responders[0]
        console.print(
            f"OCSP: {base.rstrip('/')}/ocsp, latest responder certificate {latest.serial} "
            f"valid until {_when(latest.not_after)}"
        )
    else:
        console.print(f"OCSP: {base.rstrip('/')}/ocsp, no responder certificate issued yet")
