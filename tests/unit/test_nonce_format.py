"""Nonces are plain ASCII decimals, all of the text: `re.match` with `$` accepted "7\\n" (the
newline then went into the signed message), and `\\d`-style checks accept other scripts' digits."""
from __future__ import annotations

import json
import urllib.parse

import pytest

from chalicelib.auth.nonces import parse_nonce
from chalicelib.errors import ValidationError

REFUSED = ["7\n", "7\r\n", "\n7", " 7", "7 ", "+7", "-7", "7.0", "1e3", "０", "७", "٣", "7\u200b", "", "1" * 39]


@pytest.mark.parametrize("nonce", REFUSED)
def test_parse_nonce_refuses_anything_but_ascii_digits(nonce):
    with pytest.raises(ValidationError):
        parse_nonce(nonce)


@pytest.mark.parametrize("nonce, value", [("7", 7), ("007", 7), (7, 7), ("9" * 38, int("9" * 38))])
def test_parse_nonce_keeps_the_text_as_signed(nonce, value):
    assert parse_nonce(nonce) == (str(nonce), value)


@pytest.mark.parametrize("nonce", REFUSED)
def test_signed_routes_answer_400_on_the_nonce(client, nonce):
    address = "0x" + "12" * 20
    query = urllib.parse.urlencode({"consumerAddress": address, "jobId": "x", "nonce": nonce,
                                    "signature": "0x" + "ab" * 65})
    response = client.http.put("/api/services/compute?" + query)
    assert response.status_code == 400, response.body
    assert "nonce" in json.loads(response.body)["errors"]
    body = json.dumps({"consumerAddress": address, "jobId": "x", "nonce": nonce, "signature": "0x" + "ab" * 65})
    response = client.http.put("/api/services/compute", body=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "nonce" in json.loads(response.body)["errors"]
