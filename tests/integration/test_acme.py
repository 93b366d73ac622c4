"""ACME in process: real JWS, real http-01 validation against a responder on 127.0.0.1, EAB,
finalize through the authority, ARI, revocation, and every refusal as a problem document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.testclient import TestClient

from acmekit import (
    ACME,
    Client,
    Http01Responder,
    b64,
    csr_der,
    eab_binding,
    new_key,
    problem,
    sign,
)
from iotpki.core.models import CAStatus, CertStatus
from iotpki.protocols.acme import (
    NONCE_SECRET,
    AcmeContext,
    ValidationQueue,
    acme_routes,
    build_context,
    eab,
    renewal,
)
from iotpki.protocols.acme.messages import cert_id
from iotpki.services.installation import Installation
from iotpki.store.acme import SqlAcmeStore
from iotpki.store.monitoring import SqlMonitoringStore

from conftest import ManualClock, make_installation


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def responder() -> Iterator[Http01Responder]:
    with Http01Responder().running() as running:
        yield running


@pytest.fixture
def acme_inst(
    tmp_path: Path, clock: ManualClock, responder: Http01Responder
) -> Iterator[Installation]:
    inst = make_installation(
        tmp_path / "home",
        clock=clock,
        egress_allow=["127.0.0.0/8"],  # the responder is on loopback
        acme={
            "http01_port": responder.port,
            "resolve_override": ["*.test=127.0.0.1"],
            "orders_per_identifier_per_hour": 5,
            "validation_retry_delays": [1.0, 1.0],
        },
    )
    yield inst
    inst.close()


@pytest.fixture
def ctx(acme_inst: Installation) -> AcmeContext:
    queue = ValidationQueue(manual=True, retry_delays=(1.0, 1.0), sleep=_no_sleep)
    return build_context(
        acme_inst.authority,
        SqlAcmeStore(acme_inst.store),
        acme_inst.settings,
        acme_inst.store,
        acme_inst.secrets.get(NONCE_SECRET),
        queue=queue,
    )


@pytest.fixture
def http(ctx: AcmeContext) -> Iterator[TestClient]:
    with TestClient(Starlette(routes=acme_routes(ctx)), base_url="https://acme.test") as client:
        yield client


def make_eab(ctx: AcmeContext, **options: Any) -> tuple[str, str]:
    credential, key = eab.create(
        ctx.store, now=ctx.now(), actor="test", profiles=ctx.profiles, tenant="t1", **options
    )
    return credential.key_id, key


def registered(http: TestClient, ctx: AcmeContext, **options: Any) -> Client:
    client = Client(http)
    key_id, key = make_eab(ctx, **options)
    response = client.register(
        contact=["mailto:ops@example.com"],
        externalAccountBinding=eab_binding(key_id, key, client.key, f"{ACME}/new-account"),
    )
    assert response.status_code == 201, response.text
    return client


def order_and_validate(
    client: Client, ctx: AcmeContext, responder: Http01Responder, names: list[str]
) -> dict[str, Any]:
    response = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": n} for n in names]}
    )
    assert response.status_code == 201, response.text
    order_url = response.headers["location"]
    for authz_url in response.json()["authorizations"]:
        authz = client.post(authz_url, None).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        responder.tokens[challenge["token"]] = client.key_authorization(challenge["token"])
        started = client.post(challenge["url"], {})
        assert started.json()["status"] == "processing"
        assert f'<{authz_url}>;rel="up"' in started.headers["link"]
    asyncio.run(ctx.queue.drain())
    order = client.post(order_url, None).json()
    order["url"] = order_url
    return order


def finalize(client: Client, order: dict[str, Any], names: list[str]) -> tuple[Any, Any]:
    der, key = csr_der(names, cn=names[0])
    response = client.post(order["finalize"], {"csr": b64(der)})
    return response, key


def test_directory_and_nonce(http: TestClient) -> None:
    directory = http.get(f"{ACME}/directory").json()
    assert directory["newNonce"] == f"{ACME}/new-nonce"
    assert directory["renewalInfo"] == f"{ACME}/renewal-info"
    assert directory["meta"]["externalAccountRequired"] is False
    head = http.head(f"{ACME}/new-nonce")
    assert head.status_code == 200 and head.headers["replay-nonce"]
    assert http.get(f"{ACME}/new-nonce").status_code == 204


def test_issue_download_renewal_info_revoke(
    http: TestClient, ctx: AcmeContext, responder: Http01Responder, acme_inst: Installation
) -> None:
    client = registered(http, ctx)
    names = ["a.example.test", "b.example.test"]
    order = order_and_validate(client, ctx, responder, names)
    assert order["status"] == "ready"
    response, _ = finalize(client, order, names)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "valid"
    cert_response = client.post(response.json()["certificate"], None)
    assert cert_response.headers["content-type"].startswith("application/pem-certificate-chain")
    chain = x509.load_pem_x509_certificates(cert_response.content)
    leaf = chain[0]
    leaf.verify_directly_issued_by(chain[1])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == names
    record = acme_inst.authority.get(format(leaf.serial_number, "x"))
    assert record.profile == "server"

    info = http.get(f"{ACME}/renewal-info/{cert_id(leaf)}")
    assert info.status_code == 200 and int(info.headers["retry-after"]) > 0
    window = info.json()["suggestedWindow"]
    assert window["start"] < window["end"]

    der = leaf.public_bytes(serialization.Encoding.DER)
    revoked = client.post(f"{ACME}/revoke-cert", {"certificate": b64(der), "reason": 4})
    assert revoked.status_code == 200, revoked.text
    assert acme_inst.authority.get(record.serial).status is CertStatus.REVOKED
    problem(client.post(f"{ACME}/revoke-cert", {"certificate": b64(der)}), "alreadyRevoked")
    events = [e.action for e in acme_inst.store.audit_events()]
    for action in (
        "acme.account.created",
        "acme.order.created",
        "acme.authorization.valid",
        "acme.order.valid",
        "certificate.revoked",
    ):
        assert action in events


def test_revoke_with_certificate_key(
    http: TestClient, ctx: AcmeContext, responder: Http01Responder, acme_inst: Installation
) -> None:
    client = registered(http, ctx)
    order = order_and_validate(client, ctx, responder, ["k.example.test"])
    response, cert_key = finalize(client, order, ["k.example.test"])
    leaf = x509.load_pem_x509_certificates(
        client.post(response.json()["certificate"], None).content
    )[0]
    from jwcrypto import jwk

    key = jwk.JWK.from_pyca(cert_key)
    other = Client(http)
    der = b64(leaf.public_bytes(serialization.Encoding.DER))
    problem(other.post(f"{ACME}/revoke-cert", {"certificate": der}, use_jwk=True), "unauthorized")
    done = other.post(
        f"{ACME}/revoke-cert", {"certificate": der, "reason": 1}, use_jwk=True, key=key
    )
    assert done.status_code == 200, done.text
    assert acme_inst.authority.get(format(leaf.serial_number, "x")).status is CertStatus.REVOKED


def test_bad_requests_are_problems(
    http: TestClient, ctx: AcmeContext, responder: Http01Responder, acme_inst: Installation
) -> None:
    client = registered(http, ctx)
    nonce = client.fresh_nonce()
    assert (
        client.post(
            f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "x.test"}]}, nonce=nonce
        ).status_code
        == 201
    )
    problem(
        client.post(
            f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "y.test"}]}, nonce=nonce
        ),
        "badNonce",
        400,
    )
    problem(
        client.post(
            f"{ACME}/new-order",
            {"identifiers": [{"type": "dns", "value": "y.test"}]},
            nonce="bm9wZQ",
        ),
        "badNonce",
    )
    problem(
        client.post(f"{ACME}/new-order", {"identifiers": []}, header_url=f"{ACME}/new-account"),
        "unauthorized",
        403,
    )
    # a signature by another key under this account's kid
    problem(
        client.post(
            f"{ACME}/new-order",
            {"identifiers": [{"type": "dns", "value": "y.test"}]},
            key=new_key(),
        ),
        "malformed",
    )
    problem(
        client.post(
            f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "y.test"}]}, alg="ES384"
        ),
        "badSignatureAlgorithm",
    )
    hs = client.http.post(
        f"{ACME}/new-order",
        content=json.dumps(
            {
                "protected": b64(
                    json.dumps(
                        {
                            "alg": "HS256",
                            "kid": client.kid,
                            "nonce": client.fresh_nonce(),
                            "url": f"{ACME}/new-order",
                        }
                    ).encode()
                ),
                "payload": b64(b"{}"),
                "signature": b64(b"x"),
            }
        ),
        headers={"content-type": "application/jose+json"},
    )
    assert problem(hs, "badSignatureAlgorithm")["algorithms"]
    problem(
        client.post(
            f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "*.wild.test"}]}
        ),
        "rejectedIdentifier",
    )
    problem(
        client.post(f"{ACME}/new-order", {"identifiers": [{"type": "email", "value": "a@b.c"}]}),
        "unsupportedIdentifier",
    )
    problem(
        client.post(
            f"{ACME}/new-order",
            {"identifiers": [{"type": "permanent-identifier", "value": "SN-1"}]},
        ),
        "rejectedIdentifier",
    )
    for body, content_type in (
        (b"not json", "application/jose+json"),
        (b"{}", "application/jose+json"),
        (b"{}", "application/json"),
        (b"x" * 70000, "application/jose+json"),
    ):
        problem(
            http.post(f"{ACME}/new-order", content=body, headers={"content-type": content_type}),
            "malformed",
        )
    problem(http.get(f"{ACME}/new-order"), "malformed", 405)
    problem(http.post(f"{ACME}/nothing-here"), "malformed", 404)
    problem(http.get(f"{ACME}/renewal-info/garbage"), "malformed")
    problem(http.get(f"{ACME}/renewal-info/AAAA.AQ"), "malformed", 404)

    # finalize before validation, then a CSR with an extra name
    response = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "f.example.test"}]}
    )
    pending = response.json()
    der, _ = csr_der(["f.example.test"])
    problem(client.post(pending["finalize"], {"csr": b64(der)}), "orderNotReady", 403)
    order = order_and_validate(client, ctx, responder, ["g.example.test"])
    der, _ = csr_der(["g.example.test", "evil.example.test"])
    body = problem(client.post(order["finalize"], {"csr": b64(der)}), "badCSR")
    assert "evil.example.test" in body["detail"]
    problem(client.post(order["finalize"], {"csr": "!!!"}), "badCSR")
    problem(client.post(order["finalize"], {"csr": b64(b"\x30\x03\x02\x01\x00")}), "badCSR")
    assert client.post(order["url"], None).json()["status"] == "ready"

    # another account cannot read this account's order
    stranger = registered(http, ctx)
    problem(stranger.post(order["url"], None), "unauthorized")
    # kid of an unknown account; jwk where kid is required
    ghost = Client(http)
    ghost.kid = f"{ACME}/acct/nobody"
    problem(ghost.post(f"{ACME}/new-order", {"identifiers": []}), "accountDoesNotExist")
    problem(ghost.post(f"{ACME}/new-order", {"identifiers": []}, use_jwk=True), "malformed")
    since = datetime.min.replace(tzinfo=UTC)
    counts = SqlMonitoringStore(acme_inst.store).audit_counts(since, ["acme.refused"])
    assert counts["acme.refused"] >= 20


def test_external_account_binding(http: TestClient, ctx: AcmeContext) -> None:
    key_id, key = make_eab(ctx)
    first = Client(http)
    url = f"{ACME}/new-account"
    assert (
        first.register(externalAccountBinding=eab_binding(key_id, key, first.key, url)).status_code
        == 201
    )
    again = first.register()
    assert again.status_code == 200 and again.headers["location"] == first.kid
    second = Client(http)
    problem(
        second.register(externalAccountBinding=eab_binding(key_id, key, second.key, url)),
        "unauthorized",
    )
    key_id2, key2 = make_eab(ctx)
    problem(
        second.register(externalAccountBinding=eab_binding(key_id2, key2, new_key(), url)),
        "unauthorized",
    )
    problem(
        second.register(externalAccountBinding=eab_binding(key_id2, "AAAA", second.key, url)),
        "unauthorized",
    )
    problem(
        second.register(externalAccountBinding=eab_binding("eab-unknown", key2, second.key, url)),
        "unauthorized",
    )
    problem(second.register(onlyReturnExisting=True), "accountDoesNotExist")
    problem(second.register(contact=["tel:+100"]), "unsupportedContact")
    problem(second.register(contact=["mailto:not-an-address"]), "invalidContact")
    ctx.config = type(ctx.config)(
        **{**{f: getattr(ctx.config, f) for f in ctx.config.__slots__}, "eab_required": True}
    )
    problem(second.register(), "externalAccountRequired")
    assert (
        second.register(
            externalAccountBinding=eab_binding(key_id2, key2, second.key, url)
        ).status_code
        == 201
    )


def test_failed_validation_is_recorded(
    http: TestClient, ctx: AcmeContext, responder: Http01Responder
) -> None:
    client = registered(http, ctx)
    response = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "bad.example.test"}]}
    )
    order_url = response.headers["location"]
    authz_url = response.json()["authorizations"][0]
    challenge = next(
        c for c in client.post(authz_url, None).json()["challenges"] if c["type"] == "http-01"
    )
    responder.tokens[challenge["token"]] = "wrong"
    client.post(challenge["url"], {})
    asyncio.run(ctx.queue.drain())
    authz = client.post(authz_url, None).json()
    assert authz["status"] == "invalid"
    error = authz["challenges"][0]["error"]
    assert error["type"] == "urn:ietf:params:acme:error:incorrectResponse"
    order = client.post(order_url, None).json()
    assert order["status"] == "invalid" and order["error"]["type"].endswith("incorrectResponse")


def test_ip_identifier(http: TestClient, ctx: AcmeContext, responder: Http01Responder) -> None:
    client = registered(http, ctx)
    response = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}
    )
    authz = client.post(response.json()["authorizations"][0], None).json()
    assert sorted(c["type"] for c in authz["challenges"]) == ["http-01", "tls-alpn-01"]
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    responder.tokens[challenge["token"]] = client.key_authorization(challenge["token"])
    client.post(challenge["url"], {})
    asyncio.run(ctx.queue.drain())
    order = client.post(response.headers["location"], None).json()
    assert order["status"] == "ready"
    import ipaddress

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=True,
        )
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    done = client.post(
        order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))}
    )
    assert done.json()["status"] == "valid", done.text


def test_permanent_identifier_by_eab_policy(
    http: TestClient, ctx: AcmeContext, acme_inst: Installation
) -> None:
    client = registered(http, ctx, device_patterns=("SN-*",))
    problem(
        client.post(
            f"{ACME}/new-order",
            {"identifiers": [{"type": "permanent-identifier", "value": "XX-1"}]},
        ),
        "rejectedIdentifier",
    )
    response = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "permanent-identifier", "value": "SN-0042"}]}
    )
    order = response.json()
    assert order["status"] == "ready"
    der, _ = csr_der([], cn="SN-0042")
    done = client.post(order["finalize"], {"csr": b64(der)})
    assert done.json()["status"] == "valid", done.text
    leaf = x509.load_pem_x509_certificates(client.post(done.json()["certificate"], None).content)[0]
    record = acme_inst.authority.get(format(leaf.serial_number, "x"))
    assert record.device_id == "SN-0042" and record.profile == "device"


def test_account_update_key_change_deactivation(http: TestClient, ctx: AcmeContext) -> None:
    client = registered(http, ctx)
    updated = client.post(client.kid, {"contact": ["mailto:new@example.com"]})
    assert updated.json()["contact"] == ["mailto:new@example.com"]
    new = new_key("OKP")
    inner = sign(
        new,
        json.dumps(
            {"account": client.kid, "oldKey": json.loads(client.key.export_public())}
        ).encode(),
        {"url": f"{ACME}/key-change", "jwk": json.loads(new.export_public())},
    )
    changed = client.post(f"{ACME}/key-change", inner)
    assert changed.status_code == 200, changed.text
    problem(client.post(client.kid, None), "badSignatureAlgorithm")  # the old key is gone
    client.key = new
    assert client.post(client.kid, None).json()["status"] == "valid"
    orders = client.post(f"{client.kid}/orders", None)
    assert orders.json() == {"orders": []}
    assert client.post(client.kid, {"status": "deactivated"}).json()["status"] == "deactivated"
    problem(
        client.post(f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "z.test"}]}),
        "unauthorized",
    )


def test_rate_limit_per_identifier(http: TestClient, ctx: AcmeContext) -> None:
    client = registered(http, ctx)
    for _ in range(5):
        assert (
            client.post(
                f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "r.test"}]}
            ).status_code
            == 201
        )
    limited = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": "r.test"}]}
    )
    problem(limited, "rateLimited", 429)
    assert int(limited.headers["retry-after"]) > 0


def test_renewal_override_and_alternate_chain(
    http: TestClient,
    ctx: AcmeContext,
    responder: Http01Responder,
    acme_inst: Installation,
    clock: ManualClock,
) -> None:
    client = registered(http, ctx)
    order = order_and_validate(client, ctx, responder, ["ari.example.test"])
    response, _ = finalize(client, order, ["ari.example.test"])
    leaf = x509.load_pem_x509_certificates(
        client.post(response.json()["certificate"], None).content
    )[0]
    before = http.get(f"{ACME}/renewal-info/{cert_id(leaf)}").json()["suggestedWindow"]
    renewal.advance(
        ctx.store,
        now=ctx.now(),
        actor="test",
        ca_name="issuing",
        explanation_url="https://status.example/incident",
    )
    after = http.get(f"{ACME}/renewal-info/{cert_id(leaf)}").json()
    assert after["suggestedWindow"]["start"] < before["start"]
    assert after["explanationURL"] == "https://status.example/incident"

    # a cross-certificate for the issuing CA (same subject and key, signed by a second root)
    from datetime import timedelta

    from iotpki.core.models import CAKind, CARecord, KeyAlgorithm

    auth = acme_inst.authority
    auth.create_root(
        "root2",
        common_name="Root 2",
        algorithm=KeyAlgorithm.P256,
        lifetime=timedelta(days=3650),
        backend="file",
        actor="test",
    )
    issuing = auth.get_ca("issuing")
    root2 = auth.get_ca("root2")
    signer = acme_inst.keys["file"].signer(root2.key_ref or "")
    cross = (
        x509.CertificateBuilder()
        .subject_name(issuing.certificate.subject)
        .issuer_name(root2.certificate.subject)
        .public_key(issuing.certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issuing.certificate.not_valid_before_utc)
        .not_valid_after(issuing.certificate.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(
            signer,
            __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256(),
        )
    )
    with acme_inst.store.transaction() as tx:
        tx.put_ca(
            CARecord(
                "issuing-x-root2",
                CAKind.ISSUING,
                CAStatus.RETIRED,
                "root2",
                None,
                None,
                cross.public_bytes(serialization.Encoding.DER),
                created_at=ctx.now(),
            )
        )
    clock.advance(timedelta(seconds=11))  # chains are kept for a few seconds
    default = client.post(response.json()["certificate"], None)
    assert 'rel="alternate"' in default.headers["link"]
    alternate_url = response.json()["certificate"] + "/1"
    alternate = x509.load_pem_x509_certificates(client.post(alternate_url, None).content)
    assert alternate[1] == cross


def test_complete_order_on_each_database(
    tmp_path: Path, database_url: str, clock: ManualClock, responder: Http01Responder
) -> None:
    """The whole flow on SQLite (in the serving thread) and PostgreSQL (worker threads), with
    the background queue: an answer validated at once comes back ``valid``, no polling."""
    inst = make_installation(
        tmp_path / "home",
        database_url,
        clock=clock,
        egress_allow=["127.0.0.0/8"],
        acme={"http01_port": responder.port, "resolve_override": ["*.test=127.0.0.1"]},
    )
    try:
        store = SqlAcmeStore(inst.store)
        assert store.offload is (not database_url.startswith("sqlite"))
        ctx = build_context(
            inst.authority, store, inst.settings, inst.store, inst.secrets.get(NONCE_SECRET)
        )
        with TestClient(Starlette(routes=acme_routes(ctx)), base_url="https://acme.test") as http:
            client = registered(http, ctx)
            names = ["db.example.test"]
            created = client.post(
                f"{ACME}/new-order", {"identifiers": [{"type": "dns", "value": names[0]}]}
            )
            assert created.status_code == 201, created.text
            order_url = created.headers["location"]
            authz_url = created.json()["authorizations"][0]
            authz = client.post(authz_url, None).json()
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            responder.tokens[challenge["token"]] = client.key_authorization(challenge["token"])
            answered = client.post(challenge["url"], {})
            assert answered.json()["status"] == "valid", answered.text
            assert client.post(authz_url, None).json()["status"] == "valid"
            order = client.post(order_url, None).json()
            assert order["status"] == "ready"
            response, _ = finalize(client, order, names)
            assert response.json()["status"] == "valid", response.text
            problem(
                client.post(order["finalize"], {"csr": b64(csr_der(names)[0])}), "orderNotReady"
            )
            pem_chain = client.post(response.json()["certificate"], None).content
            leaf = x509.load_pem_x509_certificates(pem_chain)[0]
            assert inst.authority.get(format(leaf.serial_number, "x")).profile == "server"
        actions = [e.action for e in inst.store.audit_events()]
        assert "acme.authorization.valid" in actions and "acme.order.valid" in actions
        assert "acme.challenge.processing" not in actions  # decided within the request
    finally:
        inst.close()
