"""CORS in the deployed API: API Gateway answers the preflights from the API definition Chalice
generates (a mock OPTIONS method per path), and the gateway's own 4xx/5xx carry the header too."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from infra import gateway


def test_every_path_of_both_protocols_has_a_cors_preflight():
    from chalice.deploy.swagger import SwaggerGenerator

    import app

    document = SwaggerGenerator("us-east-1", {"api_handler_arn": "arn:aws:lambda:us-east-1:123456789012:function:x"}
                                ).generate_swagger(app.app)
    paths = document["paths"]
    assert "/node/api/services/freeCompute" in paths and "/api/services/compute" in paths and "/node" in paths
    for path, methods in paths.items():
        integration = methods["options"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "mock", path
        headers = integration["responses"]["default"]["responseParameters"]
        assert headers["method.response.header.Access-Control-Allow-Origin"] == "'*'"
        allowed = headers["method.response.header.Access-Control-Allow-Headers"].strip("'").split(",")
        assert {"Authorization", "AuthToken", "Content-Type"} <= set(allowed), path
        for method in ("GET", "POST", "PUT", "DELETE"):
            assert method in headers["method.response.header.Access-Control-Allow-Methods"]


def test_gateway_responses_carry_cors_in_the_package_and_after_deploy():
    sam = gateway.sam_gateway_responses()
    assert set(sam) == {"MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"}
    for response in sam.values():
        assert response["ResponseParameters"]["Headers"]["Access-Control-Allow-Origin"] == "'*'"
    with mock_aws():
        apigateway = boto3.client("apigateway", region_name="us-east-1")
        api = apigateway.create_rest_api(name="ocean-c2d-provider")["id"]
        root = apigateway.get_resources(restApiId=api)["items"][0]["id"]
        apigateway.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE")
        apigateway.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK")
        apigateway.create_deployment(restApiId=api, stageName="api")
        assert gateway.put_gateway_responses(apigateway, api, "api") == sorted(sam)
        for kind in sam:
            response = apigateway.get_gateway_response(restApiId=api, responseType=kind)
            assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
        assert apigateway.get_gateway_response(restApiId=api, responseType="MISSING_AUTHENTICATION_TOKEN")["statusCode"] == "404"


@pytest.mark.parametrize("kind", ["DEFAULT_4XX", "DEFAULT_5XX"])
def test_default_responses_are_json_in_the_contract_envelope(kind):
    template = gateway.RESPONSES[kind]["template"]
    # API Gateway substitutes $context.error.messageString with the quoted message
    assert json.loads(template.replace("$context.error.messageString", json.dumps('Request too large'))) == {
        "error": "Request too large"}


def test_the_api_may_read_only_the_algorithm_containers_log_streams():
    """computeStreamableLogs on AWS: DescribeJobs (no resource-level permission exists) and
    GetLogEvents on ALGORITHM_LOG_GROUP's `c2d/` streams, nothing wider."""
    from infra import policies

    env = {"CHAINS": '{"1": "https://rpc.example"}', "RESULTS_BUCKET": "b", "ALGORITHM_LOG_GROUP": "/c2d/algorithms",
           "PROVIDER_KEY_SECRET": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:key",
           "JWT_SECRET_NAME": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt",
           "BATCH_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/job", "BATCH_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/x"}
    statements = {s["Sid"]: s for s in policies.api_policy(env, "ocean-c2d-provider", "dev")["Statement"]}
    assert statements["FindAlgorithmLogStreams"]["Action"] == ["batch:DescribeJobs"]
    assert statements["ReadAlgorithmLogs"] == {
        "Sid": "ReadAlgorithmLogs", "Effect": "Allow", "Action": ["logs:GetLogEvents"],
        "Resource": ["arn:aws:logs:eu-west-1:123456789012:log-group:/c2d/algorithms:log-stream:c2d/*"]}
