"""SQL for the state replicas share: wrapped keys, sealed secrets, spent tokens, rate counters,
OCSP responders and trusted roots (``core.ports.shared``).

A mixin of :class:`iotpki.store.sql.SqlStore`: each call is one short write transaction of its
own. Rows are claimed with an insert that does nothing on conflict, so that replicas racing for
the same key agree on one row instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from iotpki.store import schema as s

__all__ = ["SharedStateSql"]


class SharedStateSql:
    """``KeyVault``, ``OnceRegistry``, ``RateCounters`` and ``ResponderStore`` in SQL."""

    engine: Engine

    @contextmanager
    def _short_write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.info["iotpki_immediate"] = True  # SQLite: BEGIN IMMEDIATE, as SqlStore does
            with conn.begin():
                yield conn

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # -- KeyVault -----------------------------------------------------------------------------

    def wrapped_key(self, key_ref: str) -> bytes | None:
        """The encrypted PKCS#8 PEM of a key, if it is kept."""
        with self.engine.connect() as conn:
            pem = conn.execute(
                select(s.wrapped_keys.c.pem).where(s.wrapped_keys.c.key_ref == key_ref)
            ).scalar()
        return None if pem is None else bytes(pem)

    def put_wrapped_key(self, key_ref: str, pem: bytes) -> None:
        """Keep an encrypted key (a reference already kept is left as it is)."""
        with self._short_write() as conn:
            conn.execute(
                self._insert(s.wrapped_keys)
                .values(key_ref=key_ref, pem=pem, created_at=datetime.now(UTC))
                .on_conflict_do_nothing()
            )

    def sealed_secret(self, name: str) -> tuple[bytes, bytes] | None:
        """The salt and sealed bytes of an installation secret, if one was made."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.sealed_secrets.c.salt, s.sealed_secrets.c.sealed).where(
                    s.sealed_secrets.c.name == name
                )
            ).first()
        return None if row is None else (bytes(row.salt), bytes(row.sealed))

    def put_sealed_secret(self, name: str, salt: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        """Keep a sealed secret unless one exists; the one kept (the first writer wins)."""
        with self._short_write() as conn:
            conn.execute(
                self._insert(s.sealed_secrets)
                .values(name=name, salt=salt, sealed=sealed)
                .on_conflict_do_nothing()
            )
            row = conn.execute(
                select(s.sealed_secrets.c.salt, s.sealed_secrets.c.sealed).where(
                    s.sealed_secrets.c.name == name
                )
            ).one()
        return bytes(row.salt), bytes(row.sealed)

    # -- OnceRegistry -------------------------------------------------------------------------

    def spend(
        self, scope: str, token: str, value: str, now: datetime, expires_at: datetime
    ) -> str | None:
        """Record ``token`` as spent; None if it is new, else the value it was spent with."""
        c = s.spent_tokens.c
        key = and_(c.scope == scope, c.token == token)
        with self._short_write() as conn:
            conn.execute(delete(s.spent_tokens).where(key, c.expires_at <= now))
            inserted = conn.execute(
                self._insert(s.spent_tokens)
                .values(scope=scope, token=token, value=value, expires_at=expires_at)
                .on_conflict_do_nothing()
                .returning(c.token)  # rowcount is not reliable for a skipped insert
            ).first()
            if inserted is not None:
                return None
            earlier = conn.execute(select(c.value).where(key)).scalar_one()
        return str(earlier)

    def prune_spent(self, before: datetime) -> int:
        """Forget records that expired before ``before``; how many were dropped."""
        with self._short_write() as conn:
            result = conn.execute(
                delete(s.spent_tokens).where(s.spent_tokens.c.expires_at < before)
            )
        return int(result.rowcount)

    # -- RateCounters -------------------------------------------------------------------------

    def add_events(
        self, scope: str, keys: list[str], window_start: datetime, previous_start: datetime
    ) -> list[tuple[int, int]]:
        """Count one event per key; per key, the counts of this window and the previous one."""
        c = s.rate_counters.c
        counts = []
        with self._short_write() as conn:
            for key in keys:
                statement = self._insert(s.rate_counters).values(
                    scope=scope, key=key, window_start=window_start, count=1
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["scope", "key", "window_start"],
                        set_={"count": c.count + 1},
                    )
                )
                rows = dict(
                    conn.execute(
                        select(c.window_start, c.count).where(
                            c.scope == scope,
                            c.key == key,
                            c.window_start.in_([window_start, previous_start]),
                        )
                    ).all()
                )
                counts.append((rows.get(window_start, 0), rows.get(previous_start, 0)))
        return counts

    def take_back_events(self, scope: str, keys: list[str], window_start: datetime) -> None:
        """Uncount the events :meth:`add_events` just counted (the request was refused)."""
        c = s.rate_counters.c
        with self._short_write() as conn:
            conn.execute(
                update(s.rate_counters)
                .where(
                    c.scope == scope,
                    c.key.in_(keys),
                    c.window_start == window_start,
                    c.count > 0,
                )
                .values(count=c.count - 1)
            )

    def prune_counters(self, before: datetime) -> int:
        """Drop windows that started before ``before``."""
        with self._short_write() as conn:
            result = conn.execute(
                delete(s.rate_counters).where(s.rate_counters.c.window_start < before)
            )
        return int(result.rowcount)

    # -- ResponderStore -----------------------------------------------------------------------

    def ocsp_responder(self, ca_name: str) -> tuple[bytes, str] | None:
        """The certificate (DER) and key reference of the CA's responder, if one is kept."""
        c = s.ocsp_responders.c
        with self.engine.connect() as conn:
            row = conn.execute(select(c.cert_der, c.key_ref).where(c.ca_name == ca_name)).first()
        return None if row is None else (bytes(row.cert_der), str(row.key_ref))

    def put_ocsp_responder(
        self,
        ca_name: str,
        cert_der: bytes,
        key_ref: str,
        not_after: datetime,
        *,
        replace: bytes | None,
    ) -> bool:
        """Keep a new responder if the kept one is still ``replace`` (None: none kept yet)."""
        c = s.ocsp_responders.c
        values = {"cert_der": cert_der, "key_ref": key_ref, "not_after": not_after}
        with self._short_write() as conn:
            if replace is None:
                statement = (
                    self._insert(s.ocsp_responders)
                    .values(ca_name=ca_name, **values)
                    .on_conflict_do_nothing()
                )
            else:
                statement = (
                    update(s.ocsp_responders)
                    .where(c.ca_name == ca_name, c.cert_der == replace)
                    .values(**values)
                )
            return conn.execute(statement.returning(c.ca_name)).first() is not None

    # -- TrustedRootStore ---------------------------------------------------------------------

    def trusted_roots(self, kind: str) -> list[bytes]:
        """The DER certificates registered for ``kind``, in fingerprint order."""
        c = s.trusted_roots.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.der).where(c.kind == kind).order_by(c.fingerprint)
            ).scalars()
            return [bytes(der) for der in rows]

    def add_trusted_root(self, kind: str, fingerprint: str, der: bytes, now: datetime) -> None:
        """Register a certificate (registering it again changes nothing)."""
        with self._short_write() as conn:
            conn.execute(
                self._insert(s.trusted_roots)
                .values(kind=kind, fingerprint=fingerprint, der=der, added_at=now)
                .on_conflict_do_nothing()
            )

    def remove_trusted_root(self, kind: str, fingerprint: str) -> bool:
        """Withdraw a registered certificate; False when there was none."""
        c = s.trusted_roots.c
        with self._short_write() as conn:
            gone = conn.execute(
                delete(s.trusted_roots)
                .where(c.kind == kind, c.fingerprint == fingerprint)
                .returning(c.fingerprint)
            ).first()
        return gone is not None
