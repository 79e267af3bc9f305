"""API Gateway answers for requests that reach no route: a JSON 404 instead of its default 403
{"message": "Missing Authentication Token"}; and every answer the gateway makes itself (4xx, 5xx)
with the CORS header the routes send (Chalice's CORS config answers the preflights).

Wrong methods on known paths never get here (chalicelib.http registers every method and answers
its own 405), so MISSING_AUTHENTICATION_TOKEN means an unknown path. `chalice package` output gets
the response through infra/chalice-merge.json (the SAM `GatewayResponses` of the RestAPI, part of
the API definition and so of every deployment); after `chalice deploy`, which re-imports the API
definition on each deploy, `python -m infra gateway-responses --stage <stage>` puts it back and
redeploys the stage.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NOT_FOUND_BODY = '{"error": "Not found"}'
# Answers API Gateway makes itself (throttling, oversized requests, integration timeouts, unknown
# routes) carry the same CORS header as the routes' own answers, so a browser can read them too.
CORS_HEADERS = {"Access-Control-Allow-Origin": "'*'", "Access-Control-Allow-Headers": "'*'"}
RESPONSES: dict[str, dict[str, Any]] = {
    "MISSING_AUTHENTICATION_TOKEN": {"statusCode": "404", "template": NOT_FOUND_BODY},
    "DEFAULT_4XX": {"template": '{"error": $context.error.messageString}'},
    "DEFAULT_5XX": {"template": '{"error": $context.error.messageString}'},
}


def sam_gateway_responses() -> dict[str, Any]:
    """The RestAPI's `GatewayResponses` property in a SAM template."""
    responses: dict[str, Any] = {}
    for kind, spec in RESPONSES.items():
        response: dict[str, Any] = {"ResponseParameters": {"Headers": dict(CORS_HEADERS)},
                                    "ResponseTemplates": {"application/json": spec["template"]}}
        if "statusCode" in spec:
            response["StatusCode"] = spec["statusCode"]
        responses[kind] = response
    return responses


def merge_template() -> dict[str, Any]:
    """What infra/chalice-merge.json holds (a test keeps the two equal)."""
    return {"Resources": {"RestAPI": {"Properties": {"GatewayResponses": sam_gateway_responses()}}}}


def deployed_rest_api(project_dir: Path, stage: str) -> tuple[str, str]:
    """(rest API id, API Gateway stage name) of a stage `chalice deploy` created."""
    path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `chalice deploy --stage {stage}` first")
    for resource in json.loads(path.read_text()).get("resources", []):
        if resource.get("resource_type") == "rest_api":
            url = str(resource.get("rest_api_url", "")).rstrip("/")
            return str(resource["rest_api_id"]), url.rsplit("/", 1)[-1] or "api"
    raise LookupError(f"{path} records no rest_api")


def put_gateway_responses(apigateway: Any, rest_api_id: str, api_stage: str) -> list[str]:
    """Set every response and redeploy the stage so it takes effect; returns the response types."""
    headers = {f"gatewayresponse.header.{name}": value for name, value in CORS_HEADERS.items()}
    for kind, spec in RESPONSES.items():
        status = {"statusCode": spec["statusCode"]} if "statusCode" in spec else {}
        apigateway.put_gateway_response(restApiId=rest_api_id, responseType=kind, responseParameters=headers,
                                        responseTemplates={"application/json": spec["template"]}, **status)
    apigateway.create_deployment(restApiId=rest_api_id, stageName=api_stage,
                                 description="gateway responses (python -m infra gateway-responses)")
    return sorted(RESPONSES)
