"""The admin API's route declarations, the validation of their bodies, the document from them.

Each :class:`Operation` names its method, path, role (an :mod:`iotpki.core.access` action),
summary, request model and response model; :func:`bind` turns a table of them into Starlette
routes and :func:`openapi` into the OpenAPI 3.1 document, with the models' JSON schema under
``components/schemas``. :func:`validate` applies the same request models to a loaded body.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from iotpki.api.models import Error
from iotpki.errors import RequestError

__all__ = ["Operation", "Query", "bind", "openapi", "validate"]

M = TypeVar("M", bound=BaseModel)

_REF = "#/components/schemas/{model}"
_CONVERTER = re.compile(r"\{(\w+):\w+\}")
_PARAM = re.compile(r"\{(\w+)\}")
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "serial": {"type": "string", "pattern": "^[0-9a-fA-F]{1,64}$"},
}
_ERRORS = {
    "400": "bad request",
    "401": "missing or bad token",
    "403": "role not allowed",
    "404": "not found",
    "409": "conflict",
    "413": "body too large",
    "429": "too many attempts",
}


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter and its schema."""

    name: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the admin API: what it takes, what it answers, who may call it."""

    method: Literal["GET", "POST", "DELETE"]
    path: str  # a Starlette path, converters included (``{transaction_id:path}``)
    action: str | None  # the access action it needs; None: unauthenticated (the AK CA)
    handler: str  # the name of the handler method on the module's handler object
    summary: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: tuple[Query, ...] = ()

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it, without Starlette's converters."""
        return _CONVERTER.sub(r"{\1}", self.path)


Endpoint = Callable[[Request], Awaitable[Response]]


def bind(
    table: Iterable[Operation],
    wrap: Callable[[str, Any], Endpoint],
    handlers: object,
) -> list[BaseRoute]:
    """Starlette routes for a table: each handler looked up by name and wrapped for its role.

    An unauthenticated operation is wrapped with its handler's name as the action it audits.
    """
    return [
        Route(
            op.path,
            wrap(op.action or op.handler, getattr(handlers, op.handler)),
            methods=[op.method],
        )
        for op in table
    ]


def validate(model: type[M], data: dict[str, Any]) -> M:
    """A loaded JSON body checked against its request model; a RequestError naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _refusal(exc) from exc


def _refusal(exc: ValidationError) -> RequestError:
    error = exc.errors(include_url=False)[0]
    location = [str(part) for part in error["loc"]]
    name = location[0] if location else "body"
    kind = error["type"]
    if kind == "missing":
        message = f"field {name!r} is required"
    elif kind == "bool_type":
        message = f"field {name!r} must be true or false"
    elif kind in ("string_type", "string_too_long") and len(location) == 1:
        message = f"field {name!r} must be a string"
    else:
        message = f"field {'.'.join(location)!r}: {error['msg']}"
    return RequestError(message, field=name)


def openapi(title: str, table: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a route table, schemas generated from its models."""
    operations = list(table)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        models.append((op.response, "serialization"))
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item: dict[str, Any] = {
            "summary": op.summary,
            "responses": _responses(op, refs[(op.response, "serialization")]),
        }
        parameters = [_path_param(name) for name in _PARAM.findall(op.template)]
        parameters += [{"name": q.name, "in": "query", "schema": q.schema} for q in op.query]
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if op.action is None:
            item["security"] = []
        paths.setdefault(op.template, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": definitions.get("$defs", {}),
        },
    }


def _path_param(name: str) -> dict[str, Any]:
    schema = _PATH_SCHEMAS.get(name, {"type": "string"})
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _responses(op: Operation, schema: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}}
    shown: dict[str, Any] = {
        str(op.status): {
            "description": "success",
            "content": {"application/json": {"schema": schema}},
        },
    }
    shown |= {status: {"description": text, **error} for status, text in _ERRORS.items()}
    if op.action is None:  # no token to check; the body's media type is
        del shown["401"]
        shown["415"] = {"description": "not JSON", **error}
    return shown
