"""Orders (RFC 8555 section 7.4): creation, finalization through the authority, certificate
download with alternate chains (section 7.4.2) and revocation (section 7.6).
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk as jose_jwk

from iotpki.core.acme_ports import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    AcmeTransaction,
    Identifier,
)
from iotpki.core.authenticators import (
    DEVICE_IDENTIFIERS,
    AcmeAccountAuthenticator,
    AcmeAccountOrder,
    Context,
)
from iotpki.core.authority import serial_hex
from iotpki.core.csr import decode_csr
from iotpki.core.encoding import pem
from iotpki.core.models import CAStatus, CertificateRecord, CertStatus
from iotpki.core.ports import StoreTransaction
from iotpki.errors import Conflict, IotpkiError, PolicyViolation
from iotpki.protocols.acme import device_attest, jws, messages
from iotpki.protocols.acme.context import AcmeContext, new_id
from iotpki.protocols.acme.problems import AcmeProblem, from_error

__all__ = [
    "Deferred",
    "certificate_chain",
    "finalize",
    "get_order",
    "list_orders",
    "new_order",
    "revoke",
]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

_AUTHENTICATOR = AcmeAccountAuthenticator()
_ACME = Context("acme")
_RENEWAL_LOOKBACK = 50  # the account's recent orders searched for the certificate renewed

Deferred = Callable[[], dict[str, Any] | None]
"""Work a handler leaves for after its transaction: a call on the authority, which commits
in a transaction of its own."""


def _token() -> str:
    """A challenge token: 256 bits of entropy, base64url (section 8.1)."""
    return secrets.token_urlsafe(32)


def _owned_order(tx: AcmeTransaction, account: AcmeAccount, order_id: str) -> AcmeOrder:
    order = tx.get_order(order_id)
    if order is None:
        raise AcmeProblem("malformed", "no such order", status=404)
    if order.account_id != account.account_id:
        raise AcmeProblem("unauthorized", "this order belongs to another account")
    return order


def _current(order: AcmeOrder, ctx: AcmeContext) -> AcmeOrder:
    """Section 7.1.6: an order past its expiry that was not finished is invalid."""
    if order.status in ("pending", "ready") and order.expires <= ctx.now():
        return replace(
            order,
            status="invalid",
            error={"type": "urn:ietf:params:acme:error:malformed", "detail": "the order expired"},
        )
    return order


def get_order(
    ctx: AcmeContext, tx: AcmeTransaction, account: AcmeAccount, order_id: str, base: str
) -> tuple[AcmeOrder, dict[str, Any]]:
    """An order as its owner reads it (POST-as-GET)."""
    order = _current(_owned_order(tx, account, order_id), ctx)
    authz_ids = [a.authz_id for a in tx.order_authorizations(order_id)]
    return order, messages.order_json(order, base, authz_ids)


def list_orders(tx: AcmeTransaction, account: AcmeAccount, account_id: str, base: str) -> list[str]:
    """Section 7.1.2.1: the URLs of the account's orders (newest first, one page)."""
    if account.account_id != account_id:
        raise AcmeProblem("unauthorized", "a request for another account")
    return [f"{base}/order/{o}" for o in tx.account_orders(account_id, 1000)]


def _check_replaces(tx: AcmeTransaction, account: AcmeAccount, value: object) -> str | None:
    """RFC 9773 section 5: ``replaces`` names a certificate this account was issued."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AcmeProblem("malformed", "replaces must be a CertID string")
    _, serial = messages.parse_cert_id(value)
    record = tx.get_certificate(None, serial)
    order = tx.order_for_certificate(record.ca_name, serial) if record else None
    if record is None or order is None or order.account_id != account.account_id:
        raise AcmeProblem("malformed", "replaces names no certificate of this account")
    if any(o.status == "valid" for o in tx.replacing_orders(value)):
        raise AcmeProblem("alreadyReplaced", "that certificate was replaced already")
    if messages.cert_id(record.certificate).split(".")[0] != value.split(".")[0]:
        raise AcmeProblem("malformed", "replaces names no certificate of this account")
    return value


def new_order(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    account: AcmeAccount,
    base: str,
) -> tuple[AcmeOrder, Callable[[], dict[str, Any]]]:
    """newOrder (section 7.4): an order with one authorization per identifier, and the work
    that stores it."""
    payload = signed.json_payload()
    identifiers = messages.parse_identifiers(payload.get("identifiers"))
    _check_reachable(ctx, identifiers)
    if payload.get("notBefore") is not None or payload.get("notAfter") is not None:
        raise AcmeProblem(
            "malformed", "notBefore and notAfter are not supported: the profile sets lifetimes"
        )
    replaces = _check_replaces(tx, account, payload.get("replaces"))
    kinds = [t for t, _ in identifiers if t in DEVICE_IDENTIFIERS]
    attestable = bool(kinds) and bool(device_attest.challenge_types(ctx, kinds[0]))
    try:
        profile = _AUTHENTICATOR.order_profile(account, identifiers, attestable)
    except IotpkiError as exc:
        raise from_error(exc) from exc
    _rate_limit(ctx, account, identifiers)
    now = ctx.now()
    order_id = new_id()
    expires = now + ctx.config.order_lifetime
    authorizations: list[AcmeAuthorization] = []
    challenges: list[AcmeChallenge] = []
    for identifier in identifiers:
        authz_id = new_id()
        types = device_attest.challenge_types(ctx, identifier[0])
        authorizations.append(
            AcmeAuthorization(
                authz_id=authz_id,
                order_id=order_id,
                account_id=account.account_id,
                identifier=identifier,
                status="pending" if types else "valid",
                expires=min(expires, now + ctx.config.authorization_lifetime),
            )
        )
        token = _token()
        challenges.extend(
            AcmeChallenge(new_id(), authz_id, kind, token, "pending") for kind in types
        )
    ready = all(a.status == "valid" for a in authorizations)
    order = AcmeOrder(
        order_id=order_id,
        account_id=account.account_id,
        status="ready" if ready else "pending",
        identifiers=tuple(identifiers),
        profile=profile,
        expires=expires,
        created_at=now,
        replaces=replaces,
    )

    def store() -> dict[str, Any]:
        with ctx.store.transaction() as wtx:
            wtx.add_order(order, authorizations, challenges)
            wtx.append_audit(
                now,
                f"acme:{account.account_id}",
                "acme.order.created",
                order_id,
                {
                    "identifiers": [f"{t}:{v}" for t, v in identifiers],
                    "profile": profile,
                    "status": order.status,
                    "replaces": replaces,
                },
            )
        return messages.order_json(order, base, [a.authz_id for a in authorizations])

    return order, store


def _check_reachable(ctx: AcmeContext, identifiers: list[Identifier]) -> None:
    """Refuse identifiers validation could only reach through an internal address (loopback,
    private, link-local, metadata...: :mod:`iotpki.net.egress`) unless the policy allows it."""
    egress = ctx.config.validation.egress
    refused: list[dict[str, Any]] = []
    for kind, value in identifiers:
        try:
            if kind == "ip":
                egress.check(value)
            elif kind == "dns":
                egress.check_name(value)
        except PolicyViolation as exc:
            problem = AcmeProblem("rejectedIdentifier", f"{kind}:{value}: {exc.message}")
            refused.append({**problem.document(), "identifier": {"type": kind, "value": value}})
    if len(refused) == 1:
        raise AcmeProblem("rejectedIdentifier", refused[0]["detail"])
    if refused:
        raise AcmeProblem(
            "rejectedIdentifier", "several identifiers are refused", subproblems=refused
        )


def _rate_limit(ctx: AcmeContext, account: AcmeAccount, identifiers: list[Identifier]) -> None:
    waits = [
        ctx.account_orders.retry_after([account.account_id]),
        ctx.identifier_orders.retry_after([f"{t}:{v}" for t, v in identifiers]),
    ]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise AcmeProblem(
            "rateLimited",
            f"too many new orders: retry after {wait} seconds",
            headers={"Retry-After": str(wait)},
        )


def finalize(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    account: AcmeAccount,
    order_id: str,
    base: str,
) -> Deferred:
    """Finalize (section 7.4): check the order and the CSR in the request's transaction, then
    (the returned work) issue through the authority.

    Section 7.1.6 draws the order as ``ready``, then ``processing`` while the certificate is
    issued, then ``valid``. Issuance happens within this request, so the order moves from
    ``ready`` to ``valid`` in the transaction that records the certificate: it is never
    ``valid`` without its certificate nor left ``processing`` by a crash, and of two
    concurrent finalizations only one commits.
    """
    payload = signed.json_payload()
    order = _current(_owned_order(tx, account, order_id), ctx)
    if order.status != "ready":
        raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready")
    csr_text = payload.get("csr")
    if not isinstance(csr_text, str):
        raise AcmeProblem("malformed", "finalize needs a csr (base64url DER)")
    try:
        csr = decode_csr(jws.b64url_decode(csr_text))
    except (IotpkiError, AcmeProblem) as exc:
        raise AcmeProblem("badCSR", f"the CSR does not parse: {exc}") from exc
    authzs = tx.order_authorizations(order_id)
    attested = device_attest.order_attestation(tx, order)
    replaced = _replaced(tx, order)
    credentials = AcmeAccountOrder(
        account_id=account.account_id,
        account_status=account.status,
        profile=order.profile,
        identifiers=order.identifiers,
        authorized=frozenset(a.identifier for a in authzs if a.status == "valid"),
        requested=frozenset(messages.csr_identifiers(csr)),
        csr=csr,
        attested_key=attested[0] if attested else None,
    )
    try:
        authorization = _AUTHENTICATOR.authorize(credentials, _ACME)
    except IotpkiError as exc:
        raise from_error(exc, during="csr") from exc
    authz_ids = [a.authz_id for a in authzs]
    actor = f"acme:{account.account_id}"

    def complete(store_tx: StoreTransaction, record: CertificateRecord) -> None:
        acme_tx = ctx.store.joined(store_tx)
        if not acme_tx.update_order(
            order_id,
            status="valid",
            expect="ready",
            certificate_serial=record.serial,
            certificate_ca=record.ca_name,
        ):
            raise AcmeProblem("orderNotReady", "the order was finalized already")
        acme_tx.append_audit(
            ctx.now(),
            actor,
            "acme.order.valid",
            order_id,
            {"serial": record.serial, "ca": record.ca_name},
        )

    def issue() -> dict[str, Any]:
        try:
            issued = ctx.authority.issue(
                csr,
                profile=authorization.profile or order.profile,
                actor=actor,
                device_id=authorization.device_id,
                attestation=attested[1] if attested else None,
                within=complete,
                replaces=replaced,
            )
        except IotpkiError as exc:
            raise from_error(exc, during="csr") from exc
        done = replace(
            order,
            status="valid",
            certificate_serial=issued.record.serial,
            certificate_ca=issued.record.ca_name,
        )
        return messages.order_json(done, base, authz_ids)

    return issue


def _replaced(tx: AcmeTransaction, order: AcmeOrder) -> CertificateRecord | None:
    """The certificate an order replaces: the one its ``replaces`` names (RFC 9773 section 5,
    checked at newOrder), else the account's latest valid certificate for the same identifiers
    (clients that renew without ``replaces``, e.g. certbot)."""
    if order.replaces is not None:
        _, serial = messages.parse_cert_id(order.replaces)
        return tx.get_certificate(None, serial)
    wanted = set(order.identifiers)
    for order_id in tx.account_orders(order.account_id, _RENEWAL_LOOKBACK):
        earlier = tx.get_order(order_id)
        if earlier is None or earlier.order_id == order.order_id:
            continue
        if earlier.certificate_serial is None or set(earlier.identifiers) != wanted:
            continue
        record = tx.get_certificate(earlier.certificate_ca, earlier.certificate_serial)
        if record is not None and record.status is CertStatus.VALID:
            return record
    return None


def _alternate_chains(
    ctx: AcmeContext, chain: list[x509.Certificate]
) -> list[list[x509.Certificate]]:
    """Chains through cross-certificates: another CA record with the same subject and key as a
    CA of the default chain (a root rollover's cross-signed certificate)."""
    alternates: list[list[x509.Certificate]] = []
    records = [c for c in ctx.authority.list_cas() if c.certificate_der is not None]
    for index, ca_cert in enumerate(chain):
        spki = ca_cert.public_key().public_bytes(*_SPKI)
        for record in records:
            cert = record.certificate
            if (
                record.status is CAStatus.PENDING
                or cert == ca_cert
                or cert.subject != ca_cert.subject
                or cert.public_key().public_bytes(*_SPKI) != spki
            ):
                continue
            above = ctx.authority.chain(record.parent)[:-1] if record.parent else []
            alternates.append([*chain[:index], cert, *above])
    return alternates


def _chains(ctx: AcmeContext, ca_name: str) -> list[bytes]:
    """The PEM of the default chain above a CA's certificates, then of each alternate."""
    default = ctx.authority.chain(ca_name)[:-1]
    return [pem(chain) for chain in (default, *_alternate_chains(ctx, default))]


def certificate_chain(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    account: AcmeAccount,
    order_id: str,
    alternate: int,
    base: str,
) -> tuple[bytes, list[str]]:
    """Section 7.4.2: the PEM chain (leaf first) and ``Link: rel="alternate"`` URLs."""
    order = _owned_order(tx, account, order_id)
    if order.status != "valid" or order.certificate_serial is None:
        raise AcmeProblem("malformed", "this order has no certificate", status=404)
    ca_name = order.certificate_ca or ""
    der = tx.certificate_der(ca_name, order.certificate_serial)
    if der is None:
        raise AcmeProblem("malformed", "this order has no certificate", status=404)
    chains = ctx.chains(ca_name, lambda name: _chains(ctx, name))
    if not 0 <= alternate < len(chains):
        raise AcmeProblem("malformed", "no such alternate chain", status=404)
    links = [
        f'<{base}/cert/{order_id}/{n}>;rel="alternate"'
        for n in range(len(chains))
        if n != alternate
    ]
    return ssl.DER_cert_to_PEM_cert(der).encode() + chains[alternate], links


def revoke(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    account: AcmeAccount | None,
    key: jose_jwk.JWK,
) -> Deferred:
    """revokeCert (section 7.6), by the issuing account, an account authorised for every
    name, or the certificate's own key (``jwk``); the returned work revokes."""
    payload = signed.json_payload()
    text = payload.get("certificate")
    if not isinstance(text, str):
        raise AcmeProblem("malformed", "revokeCert needs the certificate (base64url DER)")
    try:
        cert = x509.load_der_x509_certificate(jws.b64url_decode(text))
        serial = serial_hex(cert.serial_number)
    except ValueError as exc:
        raise AcmeProblem("malformed", "the certificate does not parse") from exc
    reason = messages.revocation_reason(payload.get("reason"))
    record = tx.get_certificate(None, serial)
    if record is None or record.der != cert.public_bytes(serialization.Encoding.DER):
        raise AcmeProblem("malformed", "this server did not issue that certificate", status=404)
    if account is None:
        spki = jws.spki_key(key).public_bytes(*_SPKI)
        if spki != cert.public_key().public_bytes(*_SPKI):
            raise AcmeProblem("unauthorized", "the JWS key is not the certificate's key")
        actor = f"acme:key:{jws.thumbprint(key)}"
    else:
        actor = f"acme:{account.account_id}"
        order = tx.order_for_certificate(record.ca_name, serial)
        if order is None or order.account_id != account.account_id:
            names = [
                (n.split(":", 1)[0], n.split(":", 1)[1])
                for n in record.sans
                if n.split(":", 1)[0] in ("dns", "ip")
            ]
            held = {
                a.identifier for a in tx.valid_authorizations(account.account_id, names, ctx.now())
            }
            if not names or set(names) - held:
                raise AcmeProblem("unauthorized", "this account may not revoke that certificate")
    if record.status is CertStatus.REVOKED:
        raise AcmeProblem("alreadyRevoked", "the certificate is revoked already")

    def revoke_now() -> None:
        try:
            ctx.authority.revoke(serial, reason=reason, actor=actor, ca=record.ca_name)
        except Conflict as exc:
            raise AcmeProblem("alreadyRevoked", "the certificate is revoked already") from exc

    return revoke_now
