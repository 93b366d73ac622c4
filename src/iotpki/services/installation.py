"""One installation: its data directory, settings, store, key backends and authority.

The CLI and the server both start here; this is where settings turn into objects. Everything in
the data directory is private: files are created under a umask of 0o077 (0600, directories
0700), and each start names, in a warning, every file or directory that is looser.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from iotpki.core.authority import Authority, AuthorityConfig
from iotpki.core.keyquality import KeyBlocklist
from iotpki.core.models import CAKind, KeyAlgorithm
from iotpki.core.partitions import PartitionScheme
from iotpki.core.ports import Clock, KeyBackend, SystemClock
from iotpki.errors import ConfigError
from iotpki.files import write_private
from iotpki.keys.file import FileKeyBackend
from iotpki.keys.sealed import SealedSecrets
from iotpki.services.settings_file import write_settings_file
from iotpki.settings import Settings
from iotpki.store import SqlStore

__all__ = ["Installation", "loose_permissions", "open_installation"]

log = logging.getLogger(__name__)

_GENERATED_PASSPHRASE = Path("secrets") / "passphrase"


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from exc


def _passphrase(settings: Settings, create: bool) -> bytes:
    """IOTPKI_PASSPHRASE, the configured file, or a generated one kept in the home (0600)."""
    if settings.passphrase:
        return settings.passphrase.encode()
    if settings.passphrase_file:
        return _read_secret(settings.passphrase_file, "passphrase").encode()
    generated = settings.home / _GENERATED_PASSPHRASE
    if generated.is_file():
        return _read_secret(generated, "passphrase").encode()
    if not create:
        raise ConfigError(
            "no passphrase for the file key backend: set IOTPKI_PASSPHRASE or passphrase_file"
        )
    value = secrets.token_urlsafe(32)
    write_private(generated, value.encode() + b"\n")
    log.warning(
        "no passphrase configured: generated one in %s; CA keys are protected only by that "
        "file's permissions. Set IOTPKI_PASSPHRASE or passphrase_file for real protection.",
        generated,
    )
    return value.encode()


def _pkcs11_backend(settings: Settings) -> KeyBackend | None:
    if not (settings.pkcs11_module and settings.pkcs11_token):
        return None
    pin = settings.pkcs11_pin
    if pin is None and settings.pkcs11_pin_file is not None:
        pin = _read_secret(settings.pkcs11_pin_file, "PKCS#11 PIN")
    if pin is None:
        raise ConfigError("pkcs11_token is set but no PIN: set IOTPKI_PKCS11_PIN or a PIN file")
    from iotpki.keys.pkcs11 import Pkcs11Backend

    return Pkcs11Backend(settings.pkcs11_module, settings.pkcs11_token, pin)


@dataclass
class Installation:
    """The objects of one installation, built from its settings."""

    settings: Settings
    store: SqlStore
    keys: dict[str, KeyBackend]
    authority: Authority
    secrets: SealedSecrets

    @property
    def home(self) -> Path:
        """The data directory."""
        return self.settings.home

    def is_initialised(self) -> bool:
        """Whether an active issuing CA exists."""
        return any(ca.kind is CAKind.ISSUING for ca in self.authority.list_cas())

    def initialise(
        self,
        *,
        root_name: str = "root",
        issuing_name: str = "issuing",
        root_cn: str = "iotpki Root CA",
        issuing_cn: str = "iotpki Issuing CA",
        root_algorithm: KeyAlgorithm = KeyAlgorithm.P256,
        issuing_algorithm: KeyAlgorithm = KeyAlgorithm.P256,
        root_lifetime: timedelta = timedelta(days=20 * 365),
        issuing_lifetime: timedelta = timedelta(days=5 * 365),
        backend: str | None = None,
        actor: str = "cli",
    ) -> None:
        """Create the root and one issuing CA."""
        backend = backend or self.settings.key_backend
        self.authority.create_root(
            root_name,
            common_name=root_cn,
            algorithm=root_algorithm,
            lifetime=root_lifetime,
            backend=backend,
            actor=actor,
        )
        self.authority.create_issuing(
            issuing_name,
            parent=root_name,
            common_name=issuing_cn,
            algorithm=issuing_algorithm,
            lifetime=issuing_lifetime,
            backend=backend,
            actor=actor,
        )

    def close(self) -> None:
        """Release database connections and token sessions."""
        self.store.dispose()
        for backend in self.keys.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def open_installation(
    settings: Settings,
    *,
    create: bool = False,
    clock: Clock | None = None,
    lint: bool = True,
) -> Installation:
    """Open (and with ``create``, make) the installation the settings describe."""
    home = settings.home
    if not home.exists():
        if not create:
            raise ConfigError(f"no installation at {home}: run `iotpki init` first")
        home.mkdir(parents=True, mode=0o700)
    os.chmod(home, 0o700)
    database = _sqlite_file(settings.effective_database_url)
    fresh = database is not None and not database.exists()
    with _private_files():
        if create:
            write_settings_file(home)
        store = SqlStore(settings.effective_database_url)
        store.migrate()
        passphrase = _passphrase(settings, create)
        keys: dict[str, KeyBackend] = {"file": FileKeyBackend(store, passphrase, home / "keys")}
    if fresh and database is not None:
        _make_private(database)
    for path in loose_permissions(home):
        mode = stat.S_IMODE(path.lstat().st_mode)
        wanted = "0700" if path.is_dir() else "0600"
        log.warning("%s is open to other users (mode %04o): chmod it to %s", path, mode, wanted)
    pkcs11 = _pkcs11_backend(settings)
    if pkcs11 is not None:
        keys["pkcs11"] = pkcs11
    linter = None
    if lint:
        from iotpki.lint import PkilintLinter

        linter = PkilintLinter()
    authority = Authority(
        store,
        keys,
        AuthorityConfig(
            public_base_url=settings.effective_public_base_url,
            profiles=settings.resolved_profiles(),
            default_ca=settings.default_ca,
            organization=settings.organization,
            key_blocklist=_key_blocklist(settings),
            crl_partitions=_partition_scheme(settings),
        ),
        clock=clock or SystemClock(),
        linter=linter,
        rates=store,
    )
    _audit_settings(settings, authority)
    return Installation(settings, store, keys, authority, SealedSecrets(store, passphrase))


@contextmanager
def _private_files() -> Iterator[None]:
    """Create files 0600 and directories 0700 (umask 0o077) inside the block."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _make_private(database: Path) -> None:
    """Restrict a new SQLite database and its WAL and shared-memory files to the owner."""
    for suffix in ("", "-wal", "-shm"):
        path = database.with_name(database.name + suffix)
        if path.exists():
            os.chmod(path, 0o600)


def loose_permissions(home: Path) -> list[Path]:
    """Every file (beyond 0600) and directory (beyond 0700) of the home others may use."""
    loose = []
    for root, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            path = Path(root) / name
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                loose.append(path)
    return loose


def _key_blocklist(settings: Settings) -> KeyBlocklist | None:
    """The configured weak-key blocklists (openssl-blacklist format), if any."""
    if not settings.key_blocklists:
        return None
    try:
        return KeyBlocklist.from_files(settings.key_blocklists)
    except OSError as exc:
        raise ConfigError(f"cannot read a key blocklist: {exc}") from exc


_SECRET_SETTINGS = frozenset({"passphrase", "pkcs11_pin"})


def _audit_settings(settings: Settings, authority: Authority) -> None:
    """Record a ``settings.changed`` event when the effective settings differ from last time."""
    public = settings.model_dump(mode="json", exclude=set(_SECRET_SETTINGS))
    if settings.database_url:
        url = make_url(settings.database_url)
        public["database_url"] = url.render_as_string(hide_password=True)
    digest = hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()
    last = authority.store.latest_audit("settings.changed")
    if last is not None and last.data.get("digest") == digest:
        return
    previous = last.data.get("settings") if last is not None else None
    before = previous if isinstance(previous, dict) else {}
    changed = sorted(key for key, value in public.items() if before.get(key) != value)
    authority.record_event(
        "settings",
        "settings.changed",
        "settings",
        {"digest": digest, "settings": public, "changed": changed},
    )


def _partition_scheme(settings: Settings) -> PartitionScheme | None:
    """The CRL partitions new certificates name (None: switched off, the CA-wide CRL)."""
    section = settings.revocation
    if section.partition_window_days == 0:
        return None
    return PartitionScheme(section.partition_window_days, section.partition_buckets)
