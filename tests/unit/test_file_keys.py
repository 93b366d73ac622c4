"""The ``file`` key backend keeps CA keys encrypted in the database: a second backend on the same
database (another replica) signs with them, and a key an older installation kept as a file is
read once and copied into the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotpki.core.models import KeyAlgorithm
from iotpki.errors import BackendError, KeyMissing
from iotpki.keys.file import FileKeyBackend
from iotpki.store.sql import SqlStore

PASSPHRASE = b"replica passphrase"


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    store = SqlStore(f"sqlite:///{tmp_path / 'iotpki.db'}")
    store.migrate()
    return store


def test_a_key_made_by_one_replica_signs_on_another(tmp_path: Path, store: SqlStore) -> None:
    made = FileKeyBackend(store, PASSPHRASE, tmp_path / "a" / "keys")
    key_ref = made.generate("ca-issuing", KeyAlgorithm.P256)
    assert not (tmp_path / "a" / "keys").exists()  # nothing in the replica's home
    other = FileKeyBackend(store, PASSPHRASE, tmp_path / "b" / "keys")
    assert other.public_key(key_ref) == made.public_key(key_ref)
    wrong = FileKeyBackend(store, b"not the passphrase", tmp_path / "c" / "keys")
    with pytest.raises(BackendError):
        wrong.signer(key_ref)


def test_an_older_key_file_moves_into_the_database(tmp_path: Path, store: SqlStore) -> None:
    legacy = tmp_path / "keys"
    legacy.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE),
    )
    (legacy / "ca-old-0011.key.pem").write_bytes(pem)
    FileKeyBackend(store, PASSPHRASE, legacy).signer("ca-old-0011.key.pem")
    assert store.wrapped_key("ca-old-0011.key.pem") == pem
    elsewhere = FileKeyBackend(store, PASSPHRASE, tmp_path / "empty")
    assert elsewhere.public_key("ca-old-0011.key.pem") == key.public_key()


def test_a_damaged_key_file_is_not_copied(tmp_path: Path, store: SqlStore) -> None:
    legacy = tmp_path / "keys"
    legacy.mkdir()
    (legacy / "ca-bad-00.key.pem").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(BackendError):
        FileKeyBackend(store, PASSPHRASE, legacy).signer("ca-bad-00.key.pem")
    assert store.wrapped_key("ca-bad-00.key.pem") is None
    with pytest.raises(KeyMissing):
        FileKeyBackend(store, PASSPHRASE, legacy).signer("../ca-bad-00.key.pem")
