"""Routes and event handlers of the provider: each maps a request to chalicelib and nothing more."""
from __future__ import annotations

from chalice import Chalice

from chalicelib import schemas, services
from chalicelib.http import Api, Call
from chalicelib.openapi import build_document
from chalicelib.root import SOFTWARE, VERSION, root_document

app = Chalice(app_name="ocean-c2d-provider")
api = Api(app)
_cache: dict[str, object] = {}


@api.route("/", "GET", endpoint="", summary="Provider identity and its endpoints")
def root(call: Call) -> object:
    if "root" not in _cache:
        current = services.settings()
        _cache["root"] = root_document(api.operations, current.chain_ids, services.provider_address())
    return _cache["root"]


@api.route("/spec", "GET", endpoint="", summary="This OpenAPI document")
def spec(call: Call) -> object:
    if "spec" not in _cache:
        _cache["spec"] = build_document(api.operations, SOFTWARE, VERSION)
    return _cache["spec"]


@api.route("/api/services/nonce", "GET", endpoint="nonce", model=schemas.NonceQuery,
           summary="The last nonce used by an address (sign the next request with a greater one)")
def nonce(call: Call) -> object:
    return {"nonce": services.nonce_store().current(services.checksum(call.params.userAddress))}


@api.route("/api/services/createAuthToken", "GET", endpoint="create_auth_token", model=schemas.CreateAuthTokenQuery,
           signed=True, summary="Create an auth token that replaces signatures until it expires")
def create_auth_token(call: Call) -> object:
    tokens = services.token_service()
    expiration = tokens.check_expiration(call.params.expiration)
    address = services.authenticate(call, allow_token=False)
    return {"token": tokens.create(address, expiration)}


@api.route("/api/services/deleteAuthToken", "DELETE", endpoint="delete_auth_token", model=schemas.DeleteAuthTokenQuery,
           signed=True, summary="Revoke an auth token before it expires")
def delete_auth_token(call: Call) -> object:
    tokens = services.token_service()
    claims = tokens.revocable_claims(call.params.token, call.params.address)
    services.authenticate(call, allow_token=False)
    tokens.revoke(claims)
    return {"success": "Token has been deactivated."}
