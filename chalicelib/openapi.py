"""The OpenAPI 3 document, generated from the operations and request models the routes use."""
from __future__ import annotations

from typing import Any

from chalicelib.http import Operation

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}]},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "message": {"type": "string"},
        "success": {"type": "boolean"},
    },
}


def build_document(operations: list[Operation], title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, schemas)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"AuthToken": {"type": "apiKey", "in": "header", "name": "AuthToken"}}},
    }


def _operation(operation: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"operationId": operation.endpoint or operation.function.__name__, "summary": operation.summary, "responses": _responses(operation)}
    if operation.signed:
        document["security"] = [{}, {"AuthToken": []}]
    if operation.raw_body:
        binary = {"schema": {"type": "string", "format": "binary"}}
        document["requestBody"] = {"required": True, "content": {"application/octet-stream": binary}}
    if operation.model is None:
        return document
    schema = operation.model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = definition
    if operation.in_body:
        schemas[operation.model.__name__] = schema
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{operation.model.__name__}"}}},
        }
    else:
        required = set(schema.get("required", []))
        document["parameters"] = [
            {"name": name, "in": "query", "required": name in required, "schema": _query_schema(prop)}
            for name, prop in schema.get("properties", {}).items()
        ]
    return document


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """Query values are text: keep the string branch of str|int unions (its pattern) and the docs."""
    for branch in prop.get("anyOf", []):
        if branch.get("type") == "string":
            merged = {k: v for k, v in prop.items() if k not in ("anyOf", "title")}
            return {**merged, **branch}
    return {k: v for k, v in prop.items() if k != "title"}


def _responses(operation: Operation) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    responses: dict[str, Any] = {"200": {"description": "OK"}}
    for code, description in operation.responses.items():
        responses[code] = {"description": description}
    if operation.model is not None:
        responses.setdefault("400", {"description": "Invalid request", **error})
    responses.setdefault("405", {"description": "Method not allowed", **error})
    # Every route refuses an oversized body (chalicelib.http), and the gateway an overlong URL.
    responses.setdefault("413", {"description": "Request body too large", **error})
    responses.setdefault("414", {"description": "Request URI too long (answered by the gateway)"})
    responses.setdefault("503", {"description": "A dependency is unavailable", **error})
    return responses
