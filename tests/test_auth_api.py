"""DESIGN §3.2 and §3.3 through the API: signatures, nonces and auth tokens."""
from __future__ import annotations

import json
import time
import urllib.parse

import jwt
import pytest

from signing import CONSUMER_KEY, OTHER_KEY, address, sign

CONSUMER = address(CONSUMER_KEY)
OTHER = address(OTHER_KEY)


def get(client, path, **params):
    response = client.http.get(path + "?" + urllib.parse.urlencode(params))
    return response.status_code, json.loads(response.body)


def delete(client, path, **params):
    response = client.http.delete(path + "?" + urllib.parse.urlencode(params))
    return response.status_code, json.loads(response.body)


def create_token(client, nonce, key=CONSUMER_KEY, addr=None, expiration=None, signed_nonce=None, wallet_v=False):
    addr = addr or address(key)
    expiration = expiration or int(time.time()) + 600
    signature = sign(key, addr + str(signed_nonce if signed_nonce is not None else nonce), wallet_v=wallet_v)
    return get(client, "/api/services/createAuthToken", address=addr, nonce=nonce, signature=signature, expiration=expiration)


def current_nonce(client, addr=CONSUMER):
    return get(client, "/api/services/nonce", userAddress=addr)[1]["nonce"]


def test_nonce_starts_at_zero_and_follows_use(client):
    assert current_nonce(client) == 0
    assert create_token(client, 7)[0] == 200
    assert current_nonce(client) == 7
    assert current_nonce(client, CONSUMER.lower()) == 7


@pytest.mark.parametrize("wallet_v", [False, True], ids=["v01", "v2728"])
def test_both_v_conventions_are_accepted(client, wallet_v):
    status, body = create_token(client, 1, wallet_v=wallet_v)
    assert status == 200 and body["token"].count(".") == 2


def test_wrong_signer_is_refused_and_nonce_kept(client):
    signature = sign(OTHER_KEY, CONSUMER + "1")
    status, body = get(client, "/api/services/createAuthToken", address=CONSUMER, nonce=1, signature=signature,
                       expiration=int(time.time()) + 60)
    assert status == 400 and body["errors"]["signature"] == ["Invalid signature provided."]
    assert current_nonce(client) == 0


def test_message_for_another_field_is_refused(client):
    signature = sign(CONSUMER_KEY, CONSUMER + "did:op:xyz" + "1")
    status, body = get(client, "/api/services/createAuthToken", address=CONSUMER, nonce=1, signature=signature,
                       expiration=int(time.time()) + 60)
    assert status == 400 and "signature" in body["errors"]


def test_signature_for_another_nonce_is_refused(client):
    assert create_token(client, 2, signed_nonce=1)[0] == 400


@pytest.mark.parametrize("second", [5, 4, 1], ids=["equal", "stale", "much-older"])
def test_equal_and_stale_nonces_are_refused(client, second):
    assert create_token(client, 5)[0] == 200
    status, body = create_token(client, second)
    assert status == 400 and "nonce" in body["errors"]
    assert current_nonce(client) == 5


@pytest.mark.parametrize("nonce", ["abc", "-1", "1.5", "1e3", " 1", "0x10", "9" * 39, ""])
def test_malformed_nonces_are_validation_errors(client, nonce):
    status, body = get(client, "/api/services/createAuthToken", address=CONSUMER, nonce=nonce,
                       signature=sign(CONSUMER_KEY, CONSUMER + nonce), expiration=int(time.time()) + 60)
    assert status == 400 and body["message"] == "Validation error" and "nonce" in body["errors"]


def test_nonce_up_to_38_digits_and_timestamps(client):
    assert create_token(client, int(time.time() * 1000))[0] == 200
    assert create_token(client, time.time_ns())[0] == 200
    assert create_token(client, "9" * 38)[0] == 200
    assert current_nonce(client) == int("9" * 38)


@pytest.mark.parametrize("as_json", [12, "12"], ids=["json-number", "json-string"])
def test_nonce_in_json_body_as_number_or_string(client, as_json):
    body = {"address": CONSUMER, "nonce": as_json, "signature": sign(CONSUMER_KEY, CONSUMER + "12"),
            "expiration": int(time.time()) + 60}
    response = client.http.get("/api/services/createAuthToken", body=json.dumps(body),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.body


@pytest.mark.parametrize("bad", [True, 1.0, None, [1], {"n": 1}])
def test_nonce_of_other_json_types_is_refused(client, bad):
    body = {"address": CONSUMER, "nonce": bad, "signature": sign(CONSUMER_KEY, CONSUMER + str(bad)),
            "expiration": int(time.time()) + 60}
    response = client.http.get("/api/services/createAuthToken", body=json.dumps(body),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "nonce" in json.loads(response.body)["errors"]


@pytest.mark.parametrize("missing", ["address", "nonce", "signature", "expiration"])
def test_missing_fields_are_named(client, missing):
    params = {"address": CONSUMER, "nonce": 1, "signature": sign(CONSUMER_KEY, CONSUMER + "1"),
              "expiration": int(time.time()) + 60}
    del params[missing]
    status, body = get(client, "/api/services/createAuthToken", **params)
    assert status == 400 and body["errors"][missing] == ["required"]


def test_address_case_signs_verbatim_and_nonces_share_the_checksummed_key(client):
    lower = CONSUMER.lower()
    assert create_token(client, 3, addr=lower)[0] == 200
    assert create_token(client, 3, addr=CONSUMER)[0] == 400
    assert create_token(client, 4, addr=CONSUMER.upper().replace("0X", "0x"))[0] == 200


def test_duplicated_query_parameter_is_refused(client):
    response = client.http.get(f"/api/services/nonce?userAddress={CONSUMER}&userAddress={OTHER}")
    assert response.status_code == 400
    assert json.loads(response.body)["errors"]["userAddress"] == ["given more than once"]


def test_token_claims(client):
    status, body = create_token(client, 1)
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    assert claims["address"] == CONSUMER and claims["exp"] > claims["iat"] and len(claims["jti"]) >= 16


@pytest.mark.parametrize("offset", [-10, 0, 86400 * 2], ids=["past", "now", "beyond-max-lifetime"])
def test_token_expiration_must_be_future_and_within_max(client, offset):
    status, body = create_token(client, 1, expiration=int(time.time()) + offset)
    assert status == 400 and "expiration" in body["errors"]
    assert current_nonce(client) == 1, "the nonce is spent before the expiration is checked: the signature is used"


@pytest.mark.parametrize("expiration", ["soon", "1.5e3x", "-"])
def test_token_expiration_malformed(client, expiration):
    assert create_token(client, 1, expiration=expiration)[0] == 400


def test_delete_token_then_it_is_deleted(client):
    token = create_token(client, 1)[1]["token"]
    status, body = delete(client, "/api/services/deleteAuthToken", address=CONSUMER, nonce=2, token=token,
                          signature=sign(CONSUMER_KEY, CONSUMER + "2"))
    assert (status, body) == (200, {"success": "Token has been deactivated."})
    status, body = delete(client, "/api/services/deleteAuthToken", address=CONSUMER, nonce=3, token=token,
                          signature=sign(CONSUMER_KEY, CONSUMER + "3"))
    assert (status, body) == (400, {"error": "Token is deleted."})


def test_delete_invalid_and_expired_and_foreign_tokens(client):
    from chalicelib import services

    secret = services.settings().jwt_secret()
    expired = jwt.encode({"address": CONSUMER, "exp": int(time.time()) - 5, "iat": 1, "jti": "x" * 32}, secret)
    foreign = create_token(client, 1, key=OTHER_KEY)[1]["token"]
    cases = [("garbage", "Token is invalid."), (expired, "Token is expired."), (foreign, "Token is invalid.")]
    for nonce, (token, message) in enumerate(cases, start=10):
        status, body = delete(client, "/api/services/deleteAuthToken", address=CONSUMER, nonce=nonce, token=token,
                              signature=sign(CONSUMER_KEY, CONSUMER + str(nonce)))
        assert (status, body) == (400, {"error": message})
        assert current_nonce(client) == nonce, "the nonce is spent before the token is checked"


def test_delete_requires_a_signature_not_a_token(client):
    token = create_token(client, 1)[1]["token"]
    response = client.http.delete(
        "/api/services/deleteAuthToken?" + urllib.parse.urlencode({"address": CONSUMER, "nonce": 2, "token": token}),
        headers={"AuthToken": token},
    )
    assert response.status_code == 400 and "signature" in json.loads(response.body)["errors"]
