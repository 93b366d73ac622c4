"""ACME validation never reaches internal addresses unless allowed: orders for them are
refused, names are resolved once and vetted, and errors never echo the target's answer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from acmekit import ACME, Client, Http01Responder, acme_app, problem
from iotpki.net.egress import EgressPolicy
from iotpki.protocols.acme import NetworkValidator, ValidationSettings
from iotpki.protocols.acme.problems import AcmeProblem
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation

LOOPBACK = EgressPolicy.from_text(["127.0.0.0/8"])
STRICT = EgressPolicy()


@pytest.fixture
def inst(tmp_path: Path, clock: ManualClock) -> Iterator[Installation]:
    installation = make_installation(tmp_path / "home", clock=clock)
    yield installation
    installation.close()


@pytest.fixture
def responder() -> Iterator[Http01Responder]:
    with Http01Responder().running() as running:
        yield running


def _order(client: Client, *identifiers: tuple[str, str]) -> Any:
    body = {"identifiers": [{"type": t, "value": v} for t, v in identifiers]}
    return client.post(f"{ACME}/new-order", body)


INTERNAL = [
    ("ip", "127.0.0.1"),
    ("dns", "localhost"),
    ("dns", "validator.localhost"),
    ("ip", "169.254.169.254"),
    ("ip", "10.0.0.1"),
    ("ip", "::1"),
    ("ip", "0.0.0.0"),
    ("ip", "::ffff:127.0.0.1"),
    ("ip", "100.64.0.1"),
    ("ip", "fd00::1"),
    ("dns", "10.0.0.1"),
]


@pytest.mark.parametrize(("kind", "value"), INTERNAL, ids=[f"{k}:{v}" for k, v in INTERNAL])
def test_orders_for_internal_targets_are_refused(inst: Installation, kind: str, value: str) -> None:
    """RFC 8555 section 7.4 (rejectedIdentifier): validation would reach loopback, private,
    link-local (metadata) or unspecified addresses; such orders were accepted."""
    with acme_app(inst) as (_, http):
        client = Client(http)
        assert client.register().status_code == 201
        problem(_order(client, (kind, value)), "rejectedIdentifier", 400)
        refused = [e for e in inst.store.audit_events() if e.action == "acme.refused"]
        assert refused[-1].data["type"] == "rejectedIdentifier"
        assert not [e for e in inst.store.audit_events() if e.action == "acme.order.created"]


def test_several_refused_identifiers_are_subproblems(inst: Installation) -> None:
    """RFC 8555 section 6.7.1: one subproblem per refused identifier."""
    with acme_app(inst) as (_, http):
        client = Client(http)
        assert client.register().status_code == 201
        response = _order(client, ("ip", "127.0.0.1"), ("ip", "10.0.0.1"), ("dns", "ok.example"))
        body = problem(response, "rejectedIdentifier")
        assert sorted(s["identifier"]["value"] for s in body["subproblems"]) == [
            "10.0.0.1",
            "127.0.0.1",
        ]


def test_an_allowed_network_is_accepted(tmp_path: Path, clock: ManualClock) -> None:
    inst = make_installation(tmp_path / "home", clock=clock, egress_allow=["127.0.0.0/8"])
    try:
        with acme_app(inst) as (_, http):
            client = Client(http)
            assert client.register().status_code == 201
            assert _order(client, ("ip", "127.0.0.1")).status_code == 201
            assert _order(client, ("dns", "localhost")).status_code == 201
            problem(_order(client, ("ip", "169.254.169.254")), "rejectedIdentifier")
    finally:
        inst.close()


class CountingResolver:
    """Answers with ``answers`` in turn (the last one again), counting lookups."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _validator(
    responder: Http01Responder, resolver: CountingResolver, egress: EgressPolicy = LOOPBACK
) -> NetworkValidator:
    settings = ValidationSettings(http01_port=responder.port, timeout=10.0, egress=egress)
    return NetworkValidator(settings, resolver)


def _validate(validator: NetworkValidator, challenge: str, name: str, token: str = "t") -> None:
    kind = "dns" if any(c.isalpha() for c in name) else "ip"
    asyncio.run(validator.validate(challenge, (kind, name), token, f"{token}.thumb"))


def test_a_name_is_resolved_once_and_the_vetted_address_used(responder: Http01Responder) -> None:
    """No DNS rebinding: one lookup, the connection to the address it gave, Host: the name."""
    resolver = CountingResolver(["127.0.0.1"], ["10.0.0.1"])
    responder.tokens["t"] = "t.thumb"
    _validate(_validator(responder, resolver), "http-01", "rebind.example")
    assert resolver.calls == ["rebind.example"]
    assert responder.hosts == [f"rebind.example:{responder.port}"]


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], ["93.184.215.14", "127.0.0.1"], ["169.254.169.254"], ["::1"]]
)
def test_a_name_resolving_to_an_internal_address_is_not_contacted(
    responder: Http01Responder, answer: list[str]
) -> None:
    """Every address a name resolves to is vetted; no connection is made."""
    responder.tokens["t"] = "t.thumb"
    with pytest.raises(AcmeProblem) as caught:
        _validate(_validator(responder, CountingResolver(answer), STRICT), "http-01", "x.example")
    assert caught.value.kind == "connection"
    assert not any(a in caught.value.detail for a in answer)
    assert responder.hosts == []


def test_ip_identifiers_and_overrides_are_vetted(responder: Http01Responder) -> None:
    """An ip identifier and a resolve_override target obey the policy as resolved names do."""
    responder.tokens["t"] = "t.thumb"
    override = ValidationSettings(
        http01_port=responder.port, resolve_override=(("*.test", "127.0.0.1"),), egress=STRICT
    )
    for validator, name in (
        (_validator(responder, CountingResolver(["127.0.0.1"]), STRICT), "127.0.0.1"),
        (NetworkValidator(override), "a.test"),
    ):
        with pytest.raises(AcmeProblem, match="egress policy"):
            _validate(validator, "http-01", name)
    assert responder.hosts == []


def test_tls_alpn_is_vetted_before_connecting() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        settings = ValidationSettings(tlsalpn01_port=listener.getsockname()[1], egress=STRICT)
        with pytest.raises(AcmeProblem, match="egress policy"):
            _validate(NetworkValidator(settings), "tls-alpn-01", "127.0.0.1")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_errors_do_not_echo_the_target(responder: Http01Responder) -> None:
    """The target's status and body stay out of the problem (it leaked "answered HTTP 404");
    a redirect is not followed."""
    validator = _validator(responder, CountingResolver(["127.0.0.1"]))
    with pytest.raises(AcmeProblem) as caught:
        _validate(validator, "http-01", "x.example", token="missing")
    assert caught.value.kind == "incorrectResponse"
    assert "404" not in caught.value.detail and "not found" not in caught.value.detail
    assert caught.value.detail.endswith("unexpected response from the challenge target")
    responder.redirects["r"] = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(AcmeProblem) as caught:
        _validate(validator, "http-01", "x.example", token="r")
    assert "302" not in caught.value.detail and "169.254" not in caught.value.detail
    assert len(responder.hosts) == 2
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = NetworkValidator(ValidationSettings(http01_port=port, egress=LOOPBACK))
    with pytest.raises(AcmeProblem) as caught:
        _validate(refused, "http-01", "127.0.0.1")
    assert caught.value.detail.endswith("connection to the challenge target failed")
    assert "refused" not in caught.value.detail.lower()


def test_validation_through_the_api_obeys_the_policy(
    tmp_path: Path, clock: ManualClock, responder: Http01Responder
) -> None:
    """End to end: with the responder's address not allowed, the challenge turns invalid
    without a request reaching it."""
    inst = make_installation(
        tmp_path / "home",
        clock=clock,
        acme={"http01_port": responder.port, "resolve_override": ["*.test=127.0.0.1"]},
    )
    try:
        with acme_app(inst) as (ctx, http):
            client = Client(http)
            assert client.register().status_code == 201
            order = _order(client, ("dns", "inside.test")).json()
            authz = client.post(order["authorizations"][0], None).json()
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            responder.tokens[challenge["token"]] = client.key_authorization(challenge["token"])
            client.post(challenge["url"], {})
            asyncio.run(ctx.queue.drain())
            done = client.post(order["authorizations"][0], None).json()
            assert done["status"] == "invalid"
            error = next(c for c in done["challenges"] if c["type"] == "http-01")["error"]
            assert error["type"] == "urn:ietf:params:acme:error:connection"
            assert "127.0.0.1" not in error["detail"]
            assert responder.hosts == []
    finally:
        inst.close()
