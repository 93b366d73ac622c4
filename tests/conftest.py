"""Shared fixtures: a manual clock, databases (SQLite always, PostgreSQL when configured),
and a throwaway installation with a root and an issuing CA."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).parent))

from iotpki.services.installation import Installation, open_installation
from iotpki.settings import Settings

PG_URL_ENV = "IOTPKI_TEST_DATABASE_URL"


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _postgres_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_URL_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"{PG_URL_ENV} not set")
    from sqlalchemy import create_engine, text

    name = f"t_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    head, _, query = base.partition("?")
    url = head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'iotpki.db'}"
    else:
        yield from _postgres_database()


def make_settings(home: Path, database_url: str | None = None, **extra: object) -> Settings:
    """Settings for a throwaway installation."""
    return Settings(home=home, database_url=database_url, passphrase="test-passphrase", **extra)


def make_installation(
    home: Path, database_url: str | None = None, clock: ManualClock | None = None, **extra: object
) -> Installation:
    """An initialised installation: root and issuing CA on P-256 file keys."""
    inst = open_installation(make_settings(home, database_url, **extra), create=True, clock=clock)
    inst.initialise(actor="test")
    return inst


@pytest.fixture
def inst(tmp_path: Path, clock: ManualClock) -> Iterator[Installation]:
    """An installation on SQLite."""
    installation = make_installation(tmp_path / "home", clock=clock)
    yield installation
    installation.close()


@pytest.fixture
def any_inst(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Installation]:
    """An installation on each database."""
    installation = make_installation(tmp_path / "home", database_url, clock=clock)
    yield installation
    installation.close()


def device_csr(
    cn: str | None = "dev-1",
    key: object | None = None,
    sans: list[x509.GeneralName] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR signed by ``key`` (a new P-256 key by default)."""
    signing_key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions or []:
        builder = builder.add_extension(extension, critical=critical)
    hash_algorithm = None if type(signing_key).__name__.startswith("Ed") else hashes.SHA256()
    return builder.sign(signing_key, hash_algorithm)  # type: ignore[arg-type]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty database of its own on the test PostgreSQL server."""
    yield from _postgres_database()
