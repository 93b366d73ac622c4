"""Migration scep_0002: the CSRs stored in clear by scep_0001 are dropped once answered."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import iotpki.store.migrate as migrate


def _upgrade(engine: sa.Engine, target: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).with_name("migrations")))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, target)


def test_answered_requests_lose_their_csr_and_pending_ones_keep_it(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    _upgrade(engine, "scep_0001")
    now = datetime(2026, 1, 1)
    with engine.begin() as conn:
        for transaction_id, status in (("done", "success"), ("waiting", "pending")):
            conn.execute(
                sa.text(
                    "INSERT INTO scep_transactions (ca_name, transaction_id, kind, status, "
                    "key_fingerprint, csr_der, profile, created_at, updated_at) VALUES "
                    "('issuing', :t, 'enroll', :s, 'ab', :csr, 'device', :now, :now)"
                ),
                {"t": transaction_id, "s": status, "csr": b"csr with a password", "now": now},
            )
    _upgrade(engine, "heads")
    with engine.connect() as conn:
        query = sa.text("SELECT transaction_id, csr_der FROM scep_transactions")
        rows = {row.transaction_id: row.csr_der for row in conn.execute(query)}
    assert rows == {"done": None, "waiting": b"csr with a password"}
    engine.dispose()
