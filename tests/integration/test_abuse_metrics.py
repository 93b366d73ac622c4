"""Bounded metrics: the anonymous listener's request histogram is labelled by route template."""

from __future__ import annotations

import re
import secrets

from starlette.testclient import TestClient

from iotpki.server import Service, build_http_app
from iotpki.services.installation import Installation


def _route_series(metrics: str) -> set[str]:
    return set(
        re.findall(r'iotpki_request_seconds_count\{listener="http",route="([^"]*)"\}', metrics)
    )


def test_random_paths_add_one_series(inst: Installation) -> None:
    client = TestClient(build_http_app(Service(inst)))
    client.get("/crl/issuing.crl")
    client.get("/metrics")
    before = _route_series(client.get("/metrics").text)
    for _ in range(1000):
        client.get(f"/{secrets.token_hex(4)}/{secrets.token_hex(4)}")
    after = _route_series(client.get("/metrics").text)
    assert after - before == {"unmatched"}
    assert "/crl/{name}.crl" in after
    assert not any(len(route) > 64 for route in after)


def test_matched_routes_are_labelled_by_template(inst: Installation) -> None:
    client = TestClient(build_http_app(Service(inst)))
    client.get("/crl/issuing.crl")
    client.get("/crl/nosuchca.crl")
    series = _route_series(client.get("/metrics").text)
    assert [route for route in series if route.startswith("/crl/")] == ["/crl/{name}.crl"]
