"""The OpenAPI 3 document, generated from the operations and request models the routes use.

It documents both protocols: Ocean Provider v4 at `/` (ocean.py, ocean.js 3.x) and Ocean Node's
at `/node` (ocean.js >= 4, Ocean CLI); operation ids of the latter start with `node_`."""
from __future__ import annotations

import re
from typing import Any

from chalicelib.http import Operation
from chalicelib.node import is_node_operation

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}]},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "message": {"type": "string"},
        "success": {"type": "boolean"},
    },
}


_TEXT: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_OPTIONAL_TEXT: dict[str, Any] = {"type": "string", "nullable": True}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


# What the routes answer with 200 (DESIGN §3): the fields clients read, typed; others may be added.
_JOB_STATUS = _object(
    ["owner", "documentId", "jobId", "dateCreated", "dateFinished", "status", "statusText", "algorithmLogUrl",
     "resultsUrls", "results", "inputDID", "agreementId", "environment"],
    owner=_TEXT, documentId=_TEXT, jobId=_TEXT, dateCreated=_TEXT, dateFinished=_OPTIONAL_TEXT, status=_INT,
    statusText=_TEXT, algorithmLogUrl=_OPTIONAL_TEXT, resultsUrls=_list(_TEXT), resultsDid=_TEXT,
    results=_list(_object(["filename", "filesize", "type", "index"], filename=_TEXT, filesize=_INT, index=_INT,
                          type={"type": "string", "enum": ["output", "algorithmLog", "configurationLog", "publishLog"]})),
    inputDID=_list(_TEXT), algoDID=_OPTIONAL_TEXT, agreementId=_TEXT, environment=_TEXT,
    terminationDetails=_object([], exitCode={"type": "integer", "nullable": True}, reason=_TEXT, OOMKilled={
        "type": "boolean", "description": "The algorithm's container was killed at its memory limit (Batch's OutOfMemoryError)."}),
    metadata={"type": "object", "description": "The consumer's labels from Ocean Node's start (`metadata`).",
              "additionalProperties": {"oneOf": [_TEXT, {"type": "number"}, {"type": "boolean"}]}},
    # the data owner's release (issue 22): 75 "Awaiting release", then 70, or 76 "Results refused by the data owner"
    release={"type": "object", "required": ["state", "required", "expiresAt", "decisions"], "properties": {
        "state": {"type": "string", "enum": ["pending", "released", "refused", "expired"]},
        "required": _list(_TEXT), "expiresAt": {"type": "integer", "nullable": True},
        "decisions": {"type": "object", "description": "did -> {decision, by, at}"}}},
)
_JOB_STATUS["properties"]["status"] = {
    **_INT, "description": "Ocean's job status codes, and this provider's 75 'Awaiting release' (results held for "
                           "the data owner; no URL) and 76 'Results refused by the data owner' (README, 'What the "
                           "data owner sees and controls'); Ocean Node uses neither"}
# A signed compute receipt (docs/receipts.md): the receipt, and the provider's EIP-712 signature over it.
_RECEIPT = _object(["receipt", "scheme", "eip712", "signature"],
                   receipt={"type": "object", "description": "The receipt's fields (docs/receipts.md), canonical JSON"},
                   scheme={"type": "string", "enum": ["EIP-712"]},
                   eip712={"type": "object", "description": "The typed data signed: jobId, provider, status and the "
                                                            "keccak-256 of the canonical receipt"},
                   signature=_TEXT)
_AUDIT = _list(_object(
    ["jobId", "documentId", "consumer", "algorithm", "imageDigest", "times", "status", "statusText", "outputs",
     "release", "receipt"],
    jobId=_TEXT, documentId=_TEXT, consumer=_TEXT,
    algorithm=_object(["did", "rawcodeSha256"], did=_OPTIONAL_TEXT, rawcodeSha256=_OPTIONAL_TEXT),
    imageDigest=_OPTIONAL_TEXT, times={"type": "object"}, status=_INT, statusText=_TEXT,
    outputs=_object(["count", "bytes"], count=_INT, bytes=_INT), release={"type": "object"},
    receipt={**_RECEIPT, "nullable": True}))
_FEE = _object(["providerFeeAddress", "providerFeeToken", "providerFeeAmount", "providerData", "v", "r", "s", "validUntil"],
               providerFeeAddress=_TEXT, providerFeeToken=_TEXT, providerFeeAmount=_TEXT, providerData=_TEXT,
               v=_INT, r=_TEXT, s=_TEXT, validUntil=_INT)
_QUOTE = _object(["datatoken", "nonce"], datatoken=_TEXT, nonce=_INT, providerFee=_FEE, validOrder=_TEXT)
_ENVIRONMENT = _object(["id", "consumerAddress", "priceMin", "maxJobs", "currentJobs"],
                       id=_TEXT, consumerAddress=_TEXT, priceMin={"type": "number"}, maxJobs=_INT, currentJobs=_INT,
                       nCPU=_INT, nGPU=_INT, ramGB={"type": "number"}, diskGB={"type": "number"}, feeToken=_TEXT,
                       maxJobDuration=_INT, storageExpiry=_INT, free={"type": "boolean"})
_JOBS = _list({"$ref": "#/components/schemas/JobStatus"})
OK_BODIES: dict[str, dict[str, Any]] = {
    "root": _object(["software", "version", "chainIds", "providerAddresses", "serviceEndpoints"],
                    software=_TEXT, version=_TEXT, chainIds=_list(_INT),
                    providerAddresses={"type": "object", "additionalProperties": _TEXT},
                    serviceEndpoints={"type": "object", "additionalProperties": _list(_TEXT)}),
    "spec": _object(["openapi", "info", "paths"]),
    "nonce": _object(["nonce"], nonce=_INT),
    "create_auth_token": _object(["token"], token=_TEXT),
    "delete_auth_token": _object(["success"], success=_TEXT),
    "computeEnvironments": {"type": "object", "additionalProperties": _list(_ENVIRONMENT)},
    "initializeCompute": _object(["datasets"], datasets=_list(_QUOTE), algorithm=_QUOTE),
    "computeStart": _JOBS, "computeStatus": _JOBS, "computeStop": _JOBS, "computeDelete": _JOBS,
    "computeReceipt": _RECEIPT, "computeAudit": _AUDIT, "computeRelease": _JOBS,
}


_NODE_ENVIRONMENT = _object(
    ["id", "consumerAddress", "fees", "resources", "maxJobDuration", "maxJobs", "runningJobs"],
    id=_TEXT, description=_TEXT, consumerAddress=_TEXT, platform=_object([], architecture=_TEXT, os=_TEXT),
    fees={"type": "object", "description": "chainId -> [{feeToken, prices: [{id, price per unit per minute}]}]",
          "additionalProperties": _list(_object(["feeToken", "prices"], feeToken=_TEXT,
                                                prices=_list(_object(["id", "price"], id=_TEXT, price={"type": "number"}))))},
    resources=_list(_object(["id", "total", "min", "max", "inUse"], id=_TEXT, total={"type": "number"},
                            min={"type": "number"}, max={"type": "number"}, inUse={"type": "number"})),
    maxJobDuration=_INT, minJobDuration=_INT, storageExpiry=_INT, maxJobs=_INT, runningJobs=_INT,
    runningfreeJobs=_INT, queuedJobs=_INT,
    free=_object([], maxJobDuration=_INT, maxJobs=_INT, maxJobsPerConsumer=_INT, resources=_list({"type": "object"}),
                 access=_object([], addresses=_list(_TEXT))),
)
NODE_OK_BODIES: dict[str, dict[str, Any]] = {
    "node_root": _object(["chainIds", "providerAddresses", "nodePublicKey", "serviceEndpoints"],
                         chainIds=_list(_INT), providerAddresses={"type": "object", "additionalProperties": _TEXT},
                         nodePublicKey=_TEXT, serviceEndpoints={"type": "object", "additionalProperties": _list(_TEXT)}),
    "nonce": OK_BODIES["nonce"],
    "computeEnvironments": _list(_NODE_ENVIRONMENT),
    "initializeCompute": OK_BODIES["initializeCompute"],
    "computeStart": _JOBS, "freeCompute": _JOBS, "computeStatus": _JOBS, "computeStop": _JOBS,
    "generateAuthToken": _object(["token"], token=_TEXT),
    "invalidateAuthToken": _object(["success"], success={"type": "boolean"}),
    "node_ddo": _object(["id", "services", "datatokens", "indexedMetadata"], id=_TEXT,
                   services=_list({"type": "object"}), datatokens=_list({"type": "object"}),
                   indexedMetadata={"type": "object"}),
    "node_direct_command": _object(["id", "publicKey", "address"], id=_TEXT, publicKey=_TEXT, address=_TEXT),
    "computeReceipt": _RECEIPT, "computeAudit": _AUDIT, "computeRelease": _JOBS,
}
NODE_OK_BODIES["node_ddo_metadata"] = NODE_OK_BODIES["node_ddo"]
NODE_OK_BODIES["node_validate_ddo"] = _object(["hash", "publicKey", "r", "s", "v"], hash=_TEXT, publicKey=_TEXT,
                                              r=_TEXT, s=_TEXT, v=_INT)
_is_node = is_node_operation


def _operation_id(operation: Operation) -> str:
    name = operation.endpoint or operation.function.__name__
    return ("node_" + name) if _is_node(operation) and not name.startswith("node_") else name


def build_document(operations: list[Operation], title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR, "JobStatus": _JOB_STATUS}
    for operation in operations:
        if operation.accepts is not None:
            continue  # an alternative (ocean.py's v4 requests at /node): documented at its own path
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, schemas)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "AuthToken": {"type": "apiKey", "in": "header", "name": "AuthToken"},
            "Authorization": {"type": "apiKey", "in": "header", "name": "Authorization",
                              "description": "An auth token (JWT) in place of nonce and signature (Ocean Node's header; "
                                             "accepted by both protocols). Refused tokens answer 401."}}},
    }


def _operation(operation: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"operationId": _operation_id(operation), "summary": operation.summary,
                                "responses": _responses(operation)}
    if _is_node(operation):
        document["tags"] = ["Ocean Node protocol (/node)"]
    if operation.signed:
        document["security"] = [{}, {"Authorization": []}] if _is_node(operation) else [{}, {"AuthToken": []}, {"Authorization": []}]
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
        in_path = set(re.findall(r"\{(\w+)\}", operation.path))
        document["parameters"] = [
            {"name": name, "in": "path" if name in in_path else "query", "required": name in required or name in in_path,
             "schema": _query_schema(prop)}
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
    if _is_node(operation):
        ok_body = NODE_OK_BODIES.get(operation.endpoint or operation.function.__name__)
    else:
        ok_body = OK_BODIES.get(operation.endpoint or operation.function.__name__)
    if ok_body is not None:
        responses["200"]["content"] = {"application/json": {"schema": ok_body}}
    for code, description in operation.responses.items():
        responses[code] = {"description": description}
    # Every route reads the query string and a JSON body, with or without a model (chalicelib.http).
    responses.setdefault("400", {"description": "Invalid request", **error})
    responses.setdefault("405", {"description": "Method not allowed", **error})
    # Every route refuses an oversized body (chalicelib.http), and the gateway an overlong URL.
    responses.setdefault("413", {"description": "Request body too large", **error})
    responses.setdefault("414", {"description": "Request URI too long (answered by the gateway)"})
    responses.setdefault("503", {"description": "A dependency is unavailable", **error})
    if operation.signed:
        responses.setdefault("401", {"description": "The Authorization token is invalid, expired, revoked or another's", **error})
    return responses
