"""The last line of defence: an unexpected error answers a bare 500 and logs no message text."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from chalicelib.http import Operation, handle

SECRET = "https://data.example.com/private.csv?token=s3cr3t"


def test_unexpected_error_is_a_bare_500_and_its_message_is_not_logged(caplog):
    def broken(call):
        raise RuntimeError(f"could not fetch {SECRET}")

    operation = Operation("/x", "GET", "", broken, None, "", False, False)
    request = SimpleNamespace(query_params=None, raw_body=b"", headers={}, method="GET")
    with caplog.at_level(logging.DEBUG):
        response = handle(operation, request)
    assert response.status_code == 500 and json.loads(response.body) == {"error": "Internal error"}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError" in logged and "broken" in logged
    assert SECRET not in logged and "s3cr3t" not in logged
