"""``iotpki akca trust-ek-root|untrust-ek-root|list``: the EK manufacturer roots the AK CA trusts.

A device whose EK certificate chains to a registered root can have its attestation key
certified (``POST /api/v1/akca/challenge`` and ``/activate``); see docs/tpm.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from rich.table import Table

from iotpki.attestation_service import AttestationTrust, EkRoots, load_pem_bundle
from iotpki.cli.context import console, installation
from iotpki.errors import NotFound

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
    roots = EkRoots(inst.home)
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
    if not EkRoots(inst.home).remove(fingerprint):
        raise NotFound(f"no trusted EK root with fingerprint {fingerprint}")
    inst.authority.record_event("cli", "akca.ek_root.untrusted", fingerprint.lower(), {})
    console.print(f"untrusted {fingerprint.lower()}")


@app.command("list")
def list_roots(ctx: typer.Context) -> None:
    """The trusted EK roots, and the roots device-attest-01 verifies against."""
    inst = installation(ctx)
    table = Table("trust", "subject", "not after", "SHA-256")
    for cert in EkRoots(inst.home).certificates():
        der = cert.public_bytes(serialization.Encoding.DER)
        table.add_row(
            "EK root (AK CA)",
            cert.subject.rfc4514_string(),
            cert.not_valid_after_utc.strftime("%Y-%m-%d"),
            hashlib.sha256(der).hexdigest(),
        )
    for cert in AttestationTrust(inst.settings, inst.authority).roots():
        der = cert.public_bytes(serialization.Encoding.DER)
        table.add_row(
            "device-attest-01",
            cert.subject.rfc4514_string(),
            cert.not_valid_after_utc.strftime("%Y-%m-%d"),
            hashlib.sha256(der).hexdigest(),
        )
    console.print(table)
