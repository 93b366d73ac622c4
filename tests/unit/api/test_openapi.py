"""The OpenAPI document comes from the route table and the models that validate the bodies."""

from __future__ import annotations

from typing import Any

import pytest

from iotpki.api import models
from iotpki.api.openapi import TABLE, openapi_document
from iotpki.api.schema import validate
from iotpki.core.models import Role
from iotpki.errors import RequestError


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_every_operation_of_the_table_is_in_the_document() -> None:
    document = openapi_document()
    documented = {(p, m.upper()) for p, item in document["paths"].items() for m in item}
    assert documented == {(op.template, op.method) for op in TABLE}
    assert len(TABLE) == len(documented)  # no route declared twice


def test_every_reference_resolves_under_components() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_request_bodies_are_the_validating_models() -> None:
    document = openapi_document()
    for op in TABLE:
        if op.body is None:
            continue
        item = document["paths"][op.template][op.method.lower()]
        schema = item["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{op.body.__name__}"}
        generated = document["components"]["schemas"][op.body.__name__]
        assert set(generated.get("required", ())) == {
            name for name, field in op.body.model_fields.items() if field.is_required()
        }


def test_states_are_enums_in_the_document() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["Role"]["enum"] == [str(r) for r in Role]
    assert schemas["ApprovalStatus"]["enum"] == ["pending", "approved", "rejected", "issued"]
    assert schemas["ScepTransactionStatus"]["enum"] == ["pending", "success", "failure"]


def test_unauthenticated_operations_say_so() -> None:
    paths = openapi_document()["paths"]
    assert paths["/api/v1/akca/challenge"]["post"]["security"] == []
    assert "security" not in paths["/api/v1/certificates"]["post"]
    assert "/api/v1/scep/transactions/{ca}/{transaction_id}/approve" in paths


@pytest.mark.parametrize(
    ("model", "body", "field", "message"),
    [
        (models.IssueRequest, {}, "csr", "field 'csr' is required"),
        (models.IssueRequest, {"csr": 7}, "csr", "field 'csr' must be a string"),
        (models.IssueRequest, {"csr": "x" * 16385}, "csr", "field 'csr' must be a string"),
        (models.SecretRequest, {"approval": "yes"}, "approval", "must be true or false"),
        (models.TokenRequest, {"role": "root"}, "role", "field 'role': "),
        (models.RevokeRequest, {"reason": "bored"}, "reason", "field 'reason': "),
        (models.EabRequest, {"device_patterns": [1]}, "device_patterns", "device_patterns.0"),
    ],
)
def test_a_body_that_fails_its_model_is_a_request_error(
    model: type[models.IssueRequest], body: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        validate(model, body)
    assert caught.value.status == 400
    assert caught.value.data["field"] == field
    assert message in caught.value.message


def test_a_valid_body_is_typed_and_unknown_members_are_ignored() -> None:
    request = validate(models.TokenRequest, {"role": "auditor", "note": 1})
    assert request.role is Role.AUDITOR
    assert validate(models.IssueRequest, {"csr": "pem", "ca": None}).ca is None
