"""``iotpki akca trust-ek-root|untrust-ek-root|list``: the EK manufacturer roots the AK CA trusts.

A device whose EK certificate chains to a registered root can have its attestation key
certified (``POST /api/v1/akca/challenge`` and ``/activate``); see docs/tpm.md.
"""

from __future__ import annotations

import hashlib
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
    short_subject,
    short_time,
)
from iotpki.errors import NotFound
from iotpki.services.attestation import AttestationTrust, EkRoots, load_pem_bundle

__all__ = ["app"]

app = typer.Typer(
    help="The attestation-key CA: trusted TPM EK manufacturer roots.", no_args_is_help=True
)


@app.command("trust-ek-root")
def trust_ek_root(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="PEM file of the TPM manufacturer's EK root CA(s)"),
) -> None:
    """Register EK manufacturer root certificates (each must be a CA valid now)."""
    inst = installation(ctx)
    roots = EkRoots(inst.store, inst.home)
    for cert in load_pem_bundle(file):
        fingerprint = roots.add(cert, inst.authority.clock.now())
        inst.authority.record_event(
            "cli",
            "akca.ek_root.trusted",
            fingerprint,
            {"subject": cert.subject.rfc4514_string()[:512]},
        )
        console.print(f"trusted {cert.subject.rfc4514_string()} ({fingerprint})")


@app.command("untrust-ek-root")
def untrust_ek_root(
    ctx: typer.Context,
    fingerprint: str = typer.Argument(..., help="SHA-256 fingerprint shown by `akca list`"),
) -> None:
    """Withdraw a registered EK manufacturer root."""
    inst = installation(ctx)
    if not EkRoots(inst.store, inst.home).remove(fingerprint):
        raise NotFound(f"no trusted EK root with fingerprint {fingerprint}")
    inst.authority.record_event("cli", "akca.ek_root.untrusted", fingerprint.lower(), {})
    console.print(f"untrusted {fingerprint.lower()}")


_COLUMNS = (
    Column("trust", "trust"),
    Column("subject", "subject", short=(short_subject,), wrap=True),
    Column("not after", "not_after", short=(short_time, short_date)),
    Column("SHA-256", "sha256", wrap=True),  # untrust-ek-root takes it whole: fold it
)


def _root(trust: str, cert: x509.Certificate) -> dict[str, object]:
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "trust": trust,
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc,
        "sha256": hashlib.sha256(der).hexdigest(),
    }


@app.command("list")
def list_roots(ctx: typer.Context, wide: bool = WIDE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """The trusted EK roots, and the roots device-attest-01 verifies against."""
    inst = installation(ctx)
    ek_roots = EkRoots(inst.store, inst.home)
    records = [_root("EK root (AK CA)", c) for c in ek_roots.certificates()]
    records += [
        _root("device-attest-01", c)
        for c in AttestationTrust(inst.settings, inst.authority, ek_roots).roots()
    ]
    print_records(records, _COLUMNS, wide=wide, as_json=as_json)
