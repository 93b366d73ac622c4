"""Two replicas on one database, each with its own home and ACME endpoint: an account's
requests may alternate between them with no badNonce, a nonce is spent once across both, and an
account's order rate limit counts the orders placed on either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from acmekit import ACME, Client, acme_context, problem
from iotpki.protocols.acme import acme_routes
from iotpki.services.installation import Installation, open_installation

from conftest import ManualClock, make_installation, make_settings


def _order(client: Client, name: str) -> int:
    body = {"identifiers": [{"type": "dns", "value": name}]}
    return client.post(f"{ACME}/new-order", body).status_code


@pytest.fixture
def replicas(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> Iterator[tuple[TestClient, TestClient]]:
    acme = {"orders_per_account_per_hour": 3}
    first = make_installation(tmp_path / "a", database_url, clock=clock, acme=acme)
    settings = make_settings(tmp_path / "b", database_url, acme=acme)
    second = open_installation(settings, create=True, clock=clock)
    installations: list[Installation] = [first, second]
    apps = [Starlette(routes=acme_routes(acme_context(inst))) for inst in installations]
    with (
        TestClient(apps[0], base_url="https://acme.test") as one,
        TestClient(apps[1], base_url="https://acme.test") as two,
    ):
        yield one, two
    for inst in installations:
        inst.close()


def test_requests_alternate_between_replicas(replicas: tuple[TestClient, TestClient]) -> None:
    one, two = replicas
    client = Client(one)
    assert client.register().status_code == 201
    client.http = two  # the balancer sends the next request elsewhere, with one's nonce
    assert _order(client, "a.test") == 201
    client.http = one
    assert _order(client, "b.test") == 201
    spent = client.fresh_nonce()
    assert _order_with(client, "c.test", spent) == 201
    client.http = two
    problem(client.post(f"{ACME}/new-order", _ids("d.test"), nonce=spent), "badNonce", 400)


def test_the_order_rate_counts_orders_on_every_replica(
    replicas: tuple[TestClient, TestClient],
) -> None:
    one, two = replicas
    client = Client(one)
    assert client.register().status_code == 201
    for n, http in enumerate((one, two, one)):
        client.http = http
        assert _order(client, f"n{n}.test") == 201
    client.http = two
    limited = client.post(f"{ACME}/new-order", _ids("n3.test"))
    problem(limited, "rateLimited", 429)
    assert int(limited.headers["retry-after"]) > 0


def _ids(name: str) -> dict[str, object]:
    return {"identifiers": [{"type": "dns", "value": name}]}


def _order_with(client: Client, name: str, nonce: str) -> int:
    return client.post(f"{ACME}/new-order", _ids(name), nonce=nonce).status_code
