"""/spec documents the data owner's routes at both prefixes (issue 22): signed, with what they
answer, and the job status codes 75 and 76 that Ocean Node does not use."""
from __future__ import annotations

import json


def test_the_owner_routes_are_in_the_openapi_document(client):
    spec = json.loads(client.http.get("/spec").body)
    for prefix in ("", "/node"):
        paths = {name: spec["paths"][f"{prefix}/api/services/{name}"] for name in
                 ("computeReceipt", "computeAudit", "computeAuditResult", "computeRelease")}
        for name, item in paths.items():
            operation = item["post" if name == "computeRelease" else "get"]
            assert operation["security"] and "401" in operation["responses"], (prefix, name)
        receipt = paths["computeReceipt"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert receipt["required"] == ["receipt", "scheme", "eip712", "signature"]
        audit = paths["computeAudit"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "receipt" in audit["items"]["required"] and "302" in paths["computeAuditResult"]["get"]["responses"]
        names = {parameter["name"] for parameter in paths["computeAudit"]["get"]["parameters"]}
        assert {"documentId", "next", "nonce", "signature"} <= names
    release = spec["paths"]["/api/services/computeRelease"]["post"]["requestBody"]["content"]["application/json"]
    model = spec["components"]["schemas"][release["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert model["properties"]["decision"]["enum"] == ["release", "refuse"]
    status = spec["components"]["schemas"]["JobStatus"]["properties"]
    assert "75 'Awaiting release'" in status["status"]["description"] and "76" in status["status"]["description"]
    assert status["release"]["properties"]["state"]["enum"] == ["pending", "released", "refused", "expired"]
