"""Installation secrets sealed in the database under the passphrase: made once, the same for
every replica with the passphrase, unreadable without it, bound to their name."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotpki.errors import BackendError
from iotpki.keys.sealed import SealedSecrets
from iotpki.store.sql import SqlStore


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    store = SqlStore(f"sqlite:///{tmp_path / 'iotpki.db'}")
    store.migrate()
    return store


def test_every_replica_unseals_the_same_secret(store: SqlStore) -> None:
    first = SealedSecrets(store, b"passphrase").get("akca-hmac")
    assert len(first) == 32
    assert SealedSecrets(store, b"passphrase").get("akca-hmac") == first
    assert SealedSecrets(store, b"passphrase").get("acme-nonce") != first
    kept = store.sealed_secret("akca-hmac")
    assert kept is not None and first not in kept[1]  # sealed, not stored in the clear


def test_a_wrong_passphrase_or_a_swapped_name_does_not_unseal(store: SqlStore) -> None:
    SealedSecrets(store, b"passphrase").get("akca-hmac")
    with pytest.raises(BackendError):
        SealedSecrets(store, b"another").get("akca-hmac")
    salt, sealed = store.sealed_secret("akca-hmac") or (b"", b"")
    store.put_sealed_secret("swapped", salt, sealed)
    with pytest.raises(BackendError):
        SealedSecrets(store, b"passphrase").get("swapped")
