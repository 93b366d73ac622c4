"""The admin API's OpenAPI document, fuzzed in process with schemathesis under an admin token.

Every operation gets valid and invalid requests generated from the document; no answer may be
a 5xx, and every answer must match the document (status, content type, body schema). A second
test keeps the document complete: each ``/api/v1`` route of the HTTPS app is documented.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from starlette.routing import Route
from starlette.types import ASGIApp

from iotpki.api.openapi import openapi_document
from iotpki.core.access import create_token
from iotpki.core.models import Role
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr, make_installation

_EXAMPLES = 10  # per operation: about 330 requests in all
_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Target:
    """The HTTPS app of a throwaway installation and an admin token for it."""

    inst: Installation
    app: ASGIApp
    token: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    home: Path = tmp_path_factory.mktemp("fuzz") / "home"
    inst = make_installation(home, clock=ManualClock())
    inst.authority.issue(device_csr("fuzz-1"), profile="device", actor="test")
    token, _ = create_token(
        inst.store, inst.authority.clock, role=Role.ADMIN, description="fuzz", actor="test"
    )
    yield Target(inst, build_https_app(Service(inst)), token)
    inst.close()


@pytest.fixture(scope="module")
def api_schema(target: Target) -> OpenApiSchema:
    return schemathesis.openapi.from_asgi("/api/openapi.json", target.app)


_OPERATIONS = [
    (method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item
]


@pytest.mark.parametrize(("method", "path"), _OPERATIONS, ids=[f"{m} {p}" for m, p in _OPERATIONS])
def test_no_server_errors_and_answers_match_the_document(
    api_schema: OpenApiSchema, target: Target, method: str, path: str
) -> None:
    operation = api_schema.find_operation_by_path(method, path)
    assert operation is not None
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    headers = {"Authorization": f"Bearer {target.token}"}

    @given(case=cases)
    @settings(
        max_examples=_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=_CHECKS)

    fuzz()


def _template(path: str) -> str:
    return path.replace(":path}", "}")


def test_every_admin_route_is_documented(target: Target) -> None:
    app = target.app
    while not hasattr(app, "routes"):
        app = app.app  # type: ignore[attr-defined]
    routes = {
        (_template(r.path), method.lower())
        for r in app.routes
        if isinstance(r, Route) and r.path.startswith("/api/v1/")
        for method in r.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert routes - documented == set()
    assert documented - routes == set()
