"""The ``AcmeStore`` port on SQLAlchemy Core, sharing the installation's database and audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from iotpki.core.acme_ports import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    EabCredential,
    Identifier,
    RenewalOverride,
)
from iotpki.core.ports import StoreTransaction
from iotpki.store import schema as s
from iotpki.store.sql import SqlStore, SqlTransaction, _Raw

__all__ = ["SqlAcmeStore", "SqlAcmeTransaction"]

# The statements every ACME request runs, on the DBAPI cursor (see ``_Raw``): with SQLAlchemy's
# per-statement cost they would outweigh everything else the request does.
_ACCOUNT_COLUMNS = (
    "account_id, thumbprint, jwk, status, contacts, terms_agreed, eab_key_id, tenant, profile, "
    "device_profile, device_patterns, created_at"
)
_ORDER_COLUMNS = (
    "order_id, account_id, status, identifiers, profile, expires, created_at, "
    "certificate_serial, certificate_ca, error, replaces"
)
_AUTHZ_COLUMNS = (
    "authz_id, order_id, account_id, identifier_type, identifier_value, status, expires"
)
_CHALLENGE_COLUMNS = "challenge_id, authz_id, type, token, status, validated_at, error, attempts"
_RAW_ACCOUNT = _Raw(f"SELECT {_ACCOUNT_COLUMNS} FROM acme_accounts WHERE account_id = :id")
_RAW_ORDER = _Raw(f"SELECT {_ORDER_COLUMNS} FROM acme_orders WHERE order_id = :id")
_RAW_ORDER_AUTHZ = _Raw(
    f"SELECT {_AUTHZ_COLUMNS} FROM acme_authorizations WHERE order_id = :id "
    "ORDER BY identifier_value"
)
_RAW_AUTHZ = _Raw(f"SELECT {_AUTHZ_COLUMNS} FROM acme_authorizations WHERE authz_id = :id")
_RAW_AUTHZ_CHALLENGES = _Raw(
    f"SELECT {_CHALLENGE_COLUMNS} FROM acme_challenges WHERE authz_id = :id ORDER BY type"
)
_RAW_CHALLENGE = _Raw(f"SELECT {_CHALLENGE_COLUMNS} FROM acme_challenges WHERE challenge_id = :id")
_RAW_CERTIFICATE_DER = _Raw("SELECT der FROM certificates WHERE ca_name = :ca AND serial = :serial")
_RAW_INSERT_ORDER = _Raw(
    f"INSERT INTO acme_orders ({_ORDER_COLUMNS}) VALUES (:order_id, :account_id, :status, "
    ":identifiers, :profile, :expires, :created_at, NULL, NULL, :error, :replaces)"
)
_RAW_INSERT_AUTHZ = _Raw(
    f"INSERT INTO acme_authorizations ({_AUTHZ_COLUMNS}) VALUES (:authz_id, :order_id, "
    ":account_id, :identifier_type, :identifier_value, :status, :expires)"
)
_RAW_INSERT_CHALLENGE = _Raw(
    "INSERT INTO acme_challenges (challenge_id, authz_id, type, token, status, attempts) "
    "VALUES (:challenge_id, :authz_id, :type, :token, :status, 0)"
)
_RAW_MOVE_AUTHZ = _Raw(
    "UPDATE acme_authorizations SET status = :status WHERE authz_id = :id AND status = :expect"
)


def _utc(value: object) -> datetime | None:
    """A timestamp read on the DBAPI cursor (text on SQLite, naive UTC on PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC)


def _raw_account(r: Any) -> AcmeAccount:
    return AcmeAccount(
        account_id=r[0],
        thumbprint=r[1],
        jwk=r[2],
        status=r[3],
        contacts=tuple(json.loads(r[4])),
        terms_agreed=bool(r[5]),
        eab_key_id=r[6],
        tenant=r[7],
        profile=r[8],
        device_profile=r[9],
        device_patterns=tuple(json.loads(r[10])),
        created_at=_utc(r[11]),  # type: ignore[arg-type]
    )


def _raw_order(r: Any) -> AcmeOrder:
    return AcmeOrder(
        order_id=r[0],
        account_id=r[1],
        status=r[2],
        identifiers=tuple((t, v) for t, v in json.loads(r[3])),
        profile=r[4],
        expires=_utc(r[5]),  # type: ignore[arg-type]
        created_at=_utc(r[6]),  # type: ignore[arg-type]
        certificate_serial=r[7],
        certificate_ca=r[8],
        error=json.loads(r[9]) if r[9] else None,
        replaces=r[10],
    )


def _raw_authorization(r: Any) -> AcmeAuthorization:
    return AcmeAuthorization(
        authz_id=r[0],
        order_id=r[1],
        account_id=r[2],
        identifier=(r[3], r[4]),
        status=r[5],
        expires=_utc(r[6]),  # type: ignore[arg-type]
    )


def _raw_challenge(r: Any) -> AcmeChallenge:
    return AcmeChallenge(
        challenge_id=r[0],
        authz_id=r[1],
        type=r[2],
        token=r[3],
        status=r[4],
        validated_at=_utc(r[5]),
        error=json.loads(r[6]) if r[6] else None,
        attempts=r[7],
    )


_UPDATES: dict[tuple[str, tuple[str, ...], bool], _Raw] = {}


def _update(table: str, key: str, columns: tuple[str, ...], expect: bool) -> _Raw:
    """``UPDATE table SET columns WHERE key = :key [AND status = :expect]``, built once."""
    statement = _UPDATES.get((table, columns, expect))
    if statement is None:
        sets = ", ".join(f"{c} = :{c}" for c in columns)
        where = f"{key} = :key" + (" AND status = :expect" if expect else "")
        statement = _UPDATES[table, columns, expect] = _Raw(
            f"UPDATE {table} SET {sets} WHERE {where}"
        )
    return statement


def _dump(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _eab(row: Row[Any]) -> EabCredential:
    return EabCredential(
        key_id=row.key_id,
        hmac_key=row.hmac_key,
        tenant=row.tenant,
        profile=row.profile,
        device_profile=row.device_profile,
        device_patterns=tuple(json.loads(row.device_patterns)),
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        used_by=row.used_by,
        revoked=row.revoked,
    )


def _account(row: Row[Any]) -> AcmeAccount:
    return AcmeAccount(
        account_id=row.account_id,
        thumbprint=row.thumbprint,
        jwk=row.jwk,
        status=row.status,
        contacts=tuple(json.loads(row.contacts)),
        terms_agreed=row.terms_agreed,
        eab_key_id=row.eab_key_id,
        tenant=row.tenant,
        profile=row.profile,
        device_profile=row.device_profile,
        device_patterns=tuple(json.loads(row.device_patterns)),
        created_at=row.created_at,
    )


def _order(row: Row[Any]) -> AcmeOrder:
    return AcmeOrder(
        order_id=row.order_id,
        account_id=row.account_id,
        status=row.status,
        identifiers=tuple((t, v) for t, v in json.loads(row.identifiers)),
        profile=row.profile,
        expires=row.expires,
        created_at=row.created_at,
        certificate_serial=row.certificate_serial,
        certificate_ca=row.certificate_ca,
        error=json.loads(row.error) if row.error else None,
        replaces=row.replaces,
    )


def _authorization(row: Row[Any]) -> AcmeAuthorization:
    return AcmeAuthorization(
        authz_id=row.authz_id,
        order_id=row.order_id,
        account_id=row.account_id,
        identifier=(row.identifier_type, row.identifier_value),
        status=row.status,
        expires=row.expires,
    )


def _challenge(row: Row[Any]) -> AcmeChallenge:
    return AcmeChallenge(
        challenge_id=row.challenge_id,
        authz_id=row.authz_id,
        type=row.type,
        token=row.token,
        status=row.status,
        validated_at=row.validated_at,
        error=json.loads(row.error) if row.error else None,
        attempts=row.attempts,
    )


def _override(row: Row[Any]) -> RenewalOverride:
    return RenewalOverride(
        override_id=row.override_id,
        window_start=row.window_start,
        window_end=row.window_end,
        created_at=row.created_at,
        serial=row.serial,
        ca_name=row.ca_name,
        profile=row.profile,
        issued_before=row.issued_before,
        explanation_url=row.explanation_url,
        actor=row.actor,
    )


class SqlAcmeTransaction(SqlTransaction):
    """The ``AcmeTransaction`` port: ACME tables plus the audit chain, in one transaction."""

    def add_eab(self, credential: EabCredential) -> None:
        """Insert an EAB credential."""
        self._conn.execute(
            insert(s.acme_eab).values(
                key_id=credential.key_id,
                hmac_key=credential.hmac_key,
                tenant=credential.tenant,
                profile=credential.profile,
                device_profile=credential.device_profile,
                device_patterns=_dump(list(credential.device_patterns)),
                description=credential.description,
                created_at=credential.created_at,
                expires_at=credential.expires_at,
                used_at=None,
                used_by=None,
                revoked=False,
            )
        )

    def get_eab(self, key_id: str) -> EabCredential | None:
        """An EAB credential by key id."""
        row = self._conn.execute(select(s.acme_eab).where(s.acme_eab.c.key_id == key_id)).first()
        return None if row is None else _eab(row)

    def list_eab(self) -> list[EabCredential]:
        """Every EAB credential, newest first."""
        rows = self._conn.execute(select(s.acme_eab).order_by(s.acme_eab.c.created_at.desc()))
        return [_eab(row) for row in rows]

    def use_eab(self, key_id: str, account_id: str, at: datetime) -> bool:
        """Mark a credential used; the conditional update makes single use race-free."""
        done = self._conn.execute(
            update(s.acme_eab)
            .where(
                s.acme_eab.c.key_id == key_id,
                s.acme_eab.c.used_at.is_(None),
                s.acme_eab.c.revoked.is_(False),
            )
            .values(used_at=at, used_by=account_id)
        )
        return done.rowcount == 1

    def revoke_eab(self, key_id: str) -> bool:
        """Withdraw an unused credential."""
        done = self._conn.execute(
            update(s.acme_eab)
            .where(
                s.acme_eab.c.key_id == key_id,
                s.acme_eab.c.used_at.is_(None),
                s.acme_eab.c.revoked.is_(False),
            )
            .values(revoked=True)
        )
        return done.rowcount == 1

    def add_account(self, account: AcmeAccount) -> None:
        """Insert an account (the unique thumbprint refuses a second account per key)."""
        self._conn.execute(
            insert(s.acme_accounts).values(
                account_id=account.account_id,
                thumbprint=account.thumbprint,
                jwk=account.jwk,
                status=account.status,
                contacts=_dump(list(account.contacts)),
                terms_agreed=account.terms_agreed,
                eab_key_id=account.eab_key_id,
                tenant=account.tenant,
                profile=account.profile,
                device_profile=account.device_profile,
                device_patterns=_dump(list(account.device_patterns)),
                created_at=account.created_at,
            )
        )

    def get_account(self, account_id: str) -> AcmeAccount | None:
        """An account by id."""
        row = self._raw(_RAW_ACCOUNT, {"id": account_id}).fetchone()
        return None if row is None else _raw_account(row)

    def account_by_thumbprint(self, thumbprint: str) -> AcmeAccount | None:
        """The account registered with this key."""
        row = self._conn.execute(
            select(s.acme_accounts).where(s.acme_accounts.c.thumbprint == thumbprint)
        ).first()
        return None if row is None else _account(row)

    def update_account(
        self,
        account_id: str,
        *,
        status: str | None = None,
        contacts: tuple[str, ...] | None = None,
        jwk: str | None = None,
        thumbprint: str | None = None,
    ) -> None:
        """Change an account's status, contacts or key."""
        values: dict[str, object] = {}
        if status is not None:
            values["status"] = status
        if contacts is not None:
            values["contacts"] = _dump(list(contacts))
        if jwk is not None and thumbprint is not None:
            values["jwk"], values["thumbprint"] = jwk, thumbprint
        if values:
            self._conn.execute(
                update(s.acme_accounts)
                .where(s.acme_accounts.c.account_id == account_id)
                .values(values)
            )

    def add_order(
        self,
        order: AcmeOrder,
        authorizations: list[AcmeAuthorization],
        challenges: list[AcmeChallenge],
    ) -> None:
        """Insert an order with its authorizations and challenges."""
        self._raw(
            _RAW_INSERT_ORDER,
            {
                "order_id": order.order_id,
                "account_id": order.account_id,
                "status": order.status,
                "identifiers": _dump([list(i) for i in order.identifiers]),
                "profile": order.profile,
                "expires": self._time(order.expires),
                "created_at": self._time(order.created_at),
                "error": _dump(order.error) if order.error else None,
                "replaces": order.replaces,
            },
        )
        for a in authorizations:
            self._raw(
                _RAW_INSERT_AUTHZ,
                {
                    "authz_id": a.authz_id,
                    "order_id": a.order_id,
                    "account_id": a.account_id,
                    "identifier_type": a.identifier[0],
                    "identifier_value": a.identifier[1],
                    "status": a.status,
                    "expires": self._time(a.expires),
                },
            )
        for c in challenges:
            self._raw(
                _RAW_INSERT_CHALLENGE,
                {
                    "challenge_id": c.challenge_id,
                    "authz_id": c.authz_id,
                    "type": c.type,
                    "token": c.token,
                    "status": c.status,
                },
            )

    def get_order(self, order_id: str) -> AcmeOrder | None:
        """An order by id."""
        row = self._raw(_RAW_ORDER, {"id": order_id}).fetchone()
        return None if row is None else _raw_order(row)

    def account_orders(self, account_id: str, limit: int) -> list[str]:
        """Ids of an account's orders, newest first."""
        rows = self._conn.execute(
            select(s.acme_orders.c.order_id)
            .where(s.acme_orders.c.account_id == account_id)
            .order_by(s.acme_orders.c.created_at.desc())
            .limit(limit)
        )
        return [row.order_id for row in rows]

    def order_for_certificate(self, ca_name: str, serial: str) -> AcmeOrder | None:
        """The order that produced a certificate."""
        row = self._conn.execute(
            select(s.acme_orders).where(
                s.acme_orders.c.certificate_ca == ca_name,
                s.acme_orders.c.certificate_serial == serial,
            )
        ).first()
        return None if row is None else _order(row)

    def replacing_orders(self, replaces: str) -> list[AcmeOrder]:
        """Orders that declared they replace this certificate."""
        rows = self._conn.execute(select(s.acme_orders).where(s.acme_orders.c.replaces == replaces))
        return [_order(row) for row in rows]

    def update_order(
        self,
        order_id: str,
        *,
        status: str,
        expect: str | None = None,
        error: dict[str, object] | None = None,
        certificate_serial: str | None = None,
        certificate_ca: str | None = None,
    ) -> bool:
        """Move an order to ``status``, optionally only from ``expect``."""
        values: dict[str, object] = {"status": status}
        if error is not None:
            values["error"] = _dump(error)
        if certificate_serial is not None:
            values["certificate_serial"] = certificate_serial
            values["certificate_ca"] = certificate_ca
        return self._move("acme_orders", "order_id", order_id, values, expect)

    def _move(
        self, table: str, key: str, key_value: str, values: dict[str, object], expect: str | None
    ) -> bool:
        """A conditional update of one row by primary key; True when it changed the row."""
        statement = _update(table, key, tuple(values), expect is not None)
        params = {**values, "key": key_value}
        if expect is not None:
            params["expect"] = expect
        return int(self._raw(statement, params).rowcount) == 1

    def order_authorizations(self, order_id: str) -> list[AcmeAuthorization]:
        """The authorizations of an order, in identifier order."""
        rows = self._raw(_RAW_ORDER_AUTHZ, {"id": order_id}).fetchall()
        return [_raw_authorization(row) for row in rows]

    def get_authorization(self, authz_id: str) -> AcmeAuthorization | None:
        """An authorization by id."""
        row = self._raw(_RAW_AUTHZ, {"id": authz_id}).fetchone()
        return None if row is None else _raw_authorization(row)

    def valid_authorizations(
        self, account_id: str, identifiers: list[Identifier], now: datetime
    ) -> list[AcmeAuthorization]:
        """The account's unexpired valid authorizations for any of these identifiers."""
        c = s.acme_authorizations.c
        rows = self._conn.execute(
            select(s.acme_authorizations).where(
                c.account_id == account_id,
                c.identifier_value.in_([v for _, v in identifiers]),
                c.status == "valid",
                c.expires > now,
            )
        )
        wanted = set(identifiers)
        return [a for a in map(_authorization, rows) if a.identifier in wanted]

    def update_authorization(self, authz_id: str, *, status: str, expect: str | None) -> bool:
        """Move an authorization to ``status``, optionally only from ``expect``."""
        if expect is None:
            return self._move("acme_authorizations", "authz_id", authz_id, {"status": status}, None)
        cursor = self._raw(_RAW_MOVE_AUTHZ, {"status": status, "id": authz_id, "expect": expect})
        return int(cursor.rowcount) == 1

    def authorization_challenges(self, authz_id: str) -> list[AcmeChallenge]:
        """The challenges of an authorization, by type."""
        rows = self._raw(_RAW_AUTHZ_CHALLENGES, {"id": authz_id}).fetchall()
        return [_raw_challenge(row) for row in rows]

    def get_challenge(self, challenge_id: str) -> AcmeChallenge | None:
        """A challenge by id."""
        row = self._raw(_RAW_CHALLENGE, {"id": challenge_id}).fetchone()
        return None if row is None else _raw_challenge(row)

    def update_challenge(
        self,
        challenge_id: str,
        *,
        status: str,
        expect: str | None,
        error: dict[str, object] | None = None,
        validated_at: datetime | None = None,
        attempts: int | None = None,
    ) -> bool:
        """Move a challenge to ``status``, optionally only from ``expect``."""
        values: dict[str, object] = {"status": status}
        if error is not None:
            values["error"] = _dump(error)
        if validated_at is not None:
            values["validated_at"] = self._time(validated_at)
        if attempts is not None:
            values["attempts"] = attempts
        return self._move("acme_challenges", "challenge_id", challenge_id, values, expect)

    def certificate_der(self, ca_name: str, serial: str) -> bytes | None:
        """The DER of an issued certificate (the leaf of a download)."""
        row = self._raw(_RAW_CERTIFICATE_DER, {"ca": ca_name, "serial": serial}).fetchone()
        return None if row is None else bytes(row[0])

    def processing_challenges(self, limit: int) -> list[AcmeChallenge]:
        """Challenges whose validation was started and not finished."""
        rows = self._conn.execute(
            select(s.acme_challenges).where(s.acme_challenges.c.status == "processing").limit(limit)
        )
        return [_challenge(row) for row in rows]

    def add_renewal_override(self, override: RenewalOverride) -> None:
        """Insert an operator's renewal window override."""
        self._conn.execute(
            insert(s.acme_renewal_overrides).values(
                override_id=override.override_id,
                window_start=override.window_start,
                window_end=override.window_end,
                created_at=override.created_at,
                serial=override.serial,
                ca_name=override.ca_name,
                profile=override.profile,
                issued_before=override.issued_before,
                explanation_url=override.explanation_url,
                actor=override.actor,
            )
        )

    def renewal_overrides(self) -> list[RenewalOverride]:
        """Every renewal window override, newest first."""
        rows = self._conn.execute(
            select(s.acme_renewal_overrides).order_by(s.acme_renewal_overrides.c.created_at.desc())
        )
        return [_override(row) for row in rows]


class SqlAcmeStore:
    """The ``AcmeStore`` port over the installation's ``SqlStore``: its transactions, with its
    locking and error mapping, seen as ACME transactions."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        # Whether transactions make round trips to a database server (not an embedded file).
        self.offload = store.dialect != "sqlite"

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[SqlAcmeTransaction]:
        """A unit of work with the store's locking and error mapping."""
        with self._store.transaction(readonly=readonly) as tx:
            yield SqlAcmeTransaction(tx._conn)

    def joined(self, tx: StoreTransaction) -> SqlAcmeTransaction:
        """The ACME view of a store transaction in progress (e.g. the one recording a
        certificate), so that an ACME change commits with it."""
        assert isinstance(tx, SqlTransaction)
        return SqlAcmeTransaction(tx._conn)
