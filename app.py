"""Routes and event handlers of the provider: each maps a request to chalicelib and nothing more."""
from __future__ import annotations

from chalice import Chalice, Rate

from chalicelib import schemas, services
from chalicelib.compute import handlers as compute
from chalicelib.compute import requests as compute_requests
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


@api.route("/api/services/encrypt", "POST", endpoint="encrypt", model=schemas.EncryptQuery, raw_body=True,
           summary="ECIES-encrypt the body (application/octet-stream) for this provider; answers 201 with 0x-hex text",
           responses={"201": "The 0x-hex ciphertext (text/plain)", "413": "Body larger than 1 MiB"})
def encrypt(call: Call) -> object:
    from chalicelib.assets.encrypt import encrypt_response

    current = services.settings()
    return encrypt_response(call.body, call.header("Content-Type"), call.params.chain_id(),
                            current.chain_ids, current.provider_private_key())


@api.route("/api/services/computeEnvironments", "GET", endpoint="computeEnvironments", model=schemas.EnvironmentsQuery,
           summary="The compute environments per chain, with live currentJobs")
def compute_environments(call: Call) -> object:
    return compute.compute_environments(call)


@api.route("/api/services/initializeCompute", "POST", endpoint="initializeCompute", in_body=True,
           model=compute_requests.InitializeComputeRequest, summary="Provider fees (and reusable orders) before ordering")
def initialize_compute(call: Call) -> object:
    return compute.initialize(call, app.lambda_context)


@api.route("/api/services/compute", "POST", endpoint="computeStart", in_body=True, signed=True,
           model=compute_requests.ComputeStartRequest, summary="Start a compute job on ordered datasets")
def compute_start(call: Call) -> object:
    return compute.start(call, app.lambda_context)


@api.route("/api/services/compute", "GET", endpoint="computeStatus", model=compute_requests.ComputeJobQuery,
           signed=True, summary="Status of the caller's jobs (signed: with result URLs)", responses={"404": "Unknown job"})
def compute_status(call: Call) -> object:
    return compute.status(call)


@api.route("/api/services/compute", "PUT", endpoint="computeStop", model=compute_requests.ComputeJobSignedQuery,
           signed=True, summary="Stop the caller's jobs", responses={"404": "Unknown job"})
def compute_stop(call: Call) -> object:
    return compute.stop(call)


@api.route("/api/services/compute", "DELETE", endpoint="computeDelete", model=compute_requests.ComputeJobSignedQuery,
           signed=True, summary="Stop the caller's jobs and delete their results", responses={"404": "Unknown job"})
def compute_delete(call: Call) -> object:
    return compute.delete(call)


@api.route("/api/services/computeResult", "GET", endpoint="computeResult", model=compute_requests.ComputeResultQuery,
           signed=True, summary="302 to a short-lived download URL of one result",
           responses={"302": "Redirect to the result", "404": "Unknown job"})
def compute_result(call: Call) -> object:
    return compute.result(call)


@app.on_cw_event({"source": ["aws.batch"], "detail-type": ["Batch Job State Change"]}, name="batch_job_events")
def batch_job_events(event: object) -> object:
    """AWS Batch state changes of our jobs -> job status (compute.events)."""
    from chalicelib.compute.events import handle_lambda_event

    return handle_lambda_event(event, services.job_events())


@app.on_cw_event({"source": ["ocean.c2d.runner"], "detail-type": ["Compute Job Stage Change"]},
                 name="runner_stage_events")
def runner_stage_events(event: object) -> object:
    """The job runner's stage events (configure/publish) -> job status and results."""
    from chalicelib.compute.events import handle_lambda_event

    return handle_lambda_event(event, services.job_events())


@app.schedule(Rate(5, unit=Rate.MINUTES), name="reconcile_jobs")
def reconcile_jobs(event: object) -> dict:
    """Every 5 minutes: end starts killed before dispatch, apply Batch states whose events were lost."""
    from chalicelib.compute.reconcile import build_reconciler

    return build_reconciler().run().as_dict()


@app.lambda_function(name="register_asset")
def register_asset(event: dict, context: object) -> dict:
    """Operators register a published NFT ({"chainId", "nftAddress", "txHash"?, "fromBlock"?})
    so its DDO resolves on chain: `aws lambda invoke` does what `python -m chalicelib.assets.register` does."""
    from chalicelib.assets.register import handle_event

    return handle_event(event)
