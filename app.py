"""Routes and event handlers of the provider: each maps a request to chalicelib and nothing more.

`import app` is the Lambda's init, paid once per container before its first request. It imports
what every request needs: Chalice, botocore (PynamoDB, on every signed route), pydantic and the
request models (every route validates its parameters; each model builds its validator when first
used). The route modules are imported by the first request that calls them (chalicelib.lazy): `/`
and the nonce never pay for the compute workflow, nor the v4 routes for Ocean Node's.
"""
from __future__ import annotations

import os

from chalice import Chalice, CORSConfig, Rate

from chalicelib import lazy, schemas, services
from chalicelib.observability import context as observability
from chalicelib.admin import requests as admin_requests
from chalicelib.compute import requests as compute_requests
from chalicelib.http import Api, Call
from chalicelib.node import PREFIX, is_node_operation, ocean_py
from chalicelib.node import requests as node_requests
from chalicelib.root import root_document

# No pydantic plugin is installed: without this, pydantic reads every installed distribution's
# entry points when it builds its first validator, in the first request of every container.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
compute = lazy.module("chalicelib.compute.handlers")
node = lazy.module("chalicelib.node.handlers")
admin = lazy.module("chalicelib.admin.handlers")
node_assets = lazy.module("chalicelib.node.assets")

app = Chalice(app_name="ocean-c2d-provider")
# Browsers may call every route from any origin, as the original Provider allows; ocean.js sends
# Content-Type: application/json even on GETs, so every call is preflighted (OPTIONS).
app.api.cors = CORSConfig(allow_origin="*", allow_headers=["AuthToken"], max_age=600)
api = Api(app, authenticate=services.authenticate_request)  # signed routes: the nonce is spent first
_cache: dict[str, object] = {}


@api.route("/", "GET", endpoint="", summary="Provider identity and its endpoints (Ocean Provider v4 protocol)")
def root(call: Call) -> object:
    if "root" not in _cache:
        current = services.settings()
        v4 = [op for op in api.operations if not is_node_operation(op)]
        _cache["root"] = root_document(v4, current.chain_ids, services.provider_address())
    return _cache["root"]


@api.route("/spec", "GET", endpoint="", summary="This OpenAPI document")
def spec(call: Call) -> object:
    if "spec" not in _cache:
        from chalicelib.openapi import build_document
        from chalicelib.root import SOFTWARE, VERSION

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
    return {"token": tokens.create(call.caller, tokens.check_expiration(call.params.expiration))}


@api.route("/api/services/deleteAuthToken", "DELETE", endpoint="delete_auth_token", model=schemas.DeleteAuthTokenQuery,
           signed=True, summary="Revoke an auth token before it expires")
def delete_auth_token(call: Call) -> object:
    tokens = services.token_service()
    tokens.revoke(tokens.revocable_claims(call.params.token, call.caller))
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


@api.route("/api/services/compute", "PUT", endpoint="computeStop", model=compute_requests.ComputeStopQuery,
           signed=True, summary="Stop the caller's jobs", responses={"404": "Unknown job"})
def compute_stop(call: Call) -> object:
    return compute.stop(call)


@api.route("/api/services/compute", "DELETE", endpoint="computeDelete", model=compute_requests.ComputeDeleteQuery,
           signed=True, summary="Stop the caller's jobs and delete their results", responses={"404": "Unknown job"})
def compute_delete(call: Call) -> object:
    return compute.delete(call)


@api.route("/api/services/computeResult", "GET", endpoint="computeResult", model=compute_requests.ComputeResultQuery,
           signed=True, summary="302 to a short-lived download URL of one result",
           responses={"302": "Redirect to the result", "404": "Unknown job"})
def compute_result(call: Call) -> object:
    return compute.result(call)


# -- the Ocean Node protocol (ocean.js >= 4, Ocean CLI) at /node: the same core, its own edge ---------

@api.route("/node", "GET", endpoint="", summary="Ocean Node protocol: provider identity and its endpoints")
def node_root(call: Call) -> object:
    if "node_root" not in _cache:
        current = services.settings()
        _cache["node_root"] = node.root_document(api.operations, current.chain_ids, services.provider_address(),
                                                 services.provider_public_key())
    return _cache["node_root"]


@api.route("/node/api/services/nonce", "GET", endpoint="nonce", model=schemas.NonceQuery,
           summary="The last nonce used by an address (one nonce space for both protocols)")
def node_nonce(call: Call) -> object:
    return nonce(call)


@api.route("/node/api/services/encrypt", "POST", endpoint="encrypt", model=schemas.EncryptQuery, raw_body=True,
           summary="ECIES-encrypt the body for this provider (as /api/services/encrypt)",
           responses={"201": "The 0x-hex ciphertext (text/plain)", "413": "Body larger than 1 MiB"})
def node_encrypt(call: Call) -> object:
    return encrypt(call)


@api.route("/node/api/services/computeEnvironments", "GET", endpoint="computeEnvironments",
           summary="The compute environments, an array in Ocean Node's shape, with live counts")
def node_compute_environments(call: Call) -> object:
    return node.compute_environments(call)


@api.route("/node/api/services/initializeCompute", "POST", endpoint="initializeCompute", in_body=True,
           model=node_requests.NodeInitializeRequest, summary="Provider fees (and reusable orders) before ordering")
def node_initialize_compute(call: Call) -> object:
    return node.initialize(call, app.lambda_context)


@api.route("/node/api/services/compute", "POST", endpoint="computeStart", in_body=True, signed=True,
           model=node_requests.PaidComputeRequest, summary="Start a paid job (signed: address + nonce + startCompute)")
def node_compute_start(call: Call) -> object:
    return node.start(call, app.lambda_context)


@api.route("/node/api/services/freeCompute", "POST", endpoint="freeCompute", in_body=True, signed=True,
           model=node_requests.FreeComputeRequest,
           summary="Start a free job on an environment's free tier (signed: address + nonce + freeStartCompute)")
def node_free_compute(call: Call) -> object:
    return node.free_start(call, app.lambda_context)


@api.route("/node/api/services/compute", "GET", endpoint="computeStatus", model=node_requests.NodeStatusQuery,
           summary="Status of a consumer's jobs (unsigned, reduced: no URLs)")
def node_compute_status(call: Call) -> object:
    return node.status(call)


@api.route("/node/api/services/compute", "PUT", endpoint="computeStop", model=node_requests.NodeStopQuery,
           signed=True, summary="Stop the caller's job (query string; signed: address + nonce + stopCompute)",
           responses={"404": "Unknown job"})
def node_compute_stop(call: Call) -> object:
    return node.stop(call)


@api.route("/node/api/services/computeResult", "GET", endpoint="computeResult", model=node_requests.NodeResultQuery,
           signed=True, summary="302 to a short-lived download URL of one result (signed: ... + getComputeResult)",
           responses={"302": "Redirect to the result", "404": "Unknown job"})
def node_compute_result(call: Call) -> object:
    return node.result(call)


@api.route("/node/api/services/computeStreamableLogs", "GET", endpoint="computeStreamableLogs",
           model=node_requests.NodeLogsQuery, signed=True,
           summary="The algorithm's log so far, text/plain (signed: ... + getComputeStreamableLogs). API Gateway "
                   "cannot stream: this answers what exists now (at most 1 MiB); poll for more",
           responses={"200": "The log so far (text/plain)", "404": "Unknown job, or no log yet"})
def node_compute_streamable_logs(call: Call) -> object:
    return node.streamable_logs(call)


@api.route("/node/api/services/auth/token", "POST", endpoint="generateAuthToken", in_body=True, signed=True,
           model=node_requests.NodeCreateTokenRequest,
           summary="Create an auth token for the Authorization header (signed: address + nonce + createAuthToken)")
def node_create_auth_token(call: Call) -> object:
    return node.create_token(call)


@api.route("/node/api/services/auth/token/invalidate", "POST", endpoint="invalidateAuthToken", in_body=True,
           signed=True, model=node_requests.NodeInvalidateTokenRequest,
           summary="Revoke an auth token (signed: address + nonce)")
def node_invalidate_auth_token(call: Call) -> object:
    return node.invalidate_token(call)


# -- the operator's console: the page at /admin, its API at /admin/api (chalicelib.admin) -----------

_ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]

def _console_asset(name: str):  # type: ignore[no-untyped-def]
    """GET only; every method is routed (as the API's paths are) so another gets our JSON 405."""
    from chalicelib.admin.page import asset
    from chalicelib.errors import MethodNotAllowed
    from chalicelib.http import error_response

    if app.current_request.method != "GET":
        return error_response(MethodNotAllowed("Method not allowed; use GET"), {"Allow": "GET"})
    return asset(name)


@app.route("/admin", methods=_ALL_METHODS)
def admin_page():  # type: ignore[no-untyped-def]
    return _console_asset("index.html")


@app.route("/admin/{name}", methods=_ALL_METHODS)
def admin_file(name: str):  # type: ignore[no-untyped-def]
    return _console_asset(name)


@app.route("/admin/vendor/{name}", methods=_ALL_METHODS)
def admin_vendor_file(name: str):  # type: ignore[no-untyped-def]
    return _console_asset("vendor/" + name)


@api.route("/admin/api/session", "POST", endpoint="", in_body=True, signed=True, model=admin_requests.SignInRequest,
           summary="Operator sign-in (signed: address + nonce + adminSignIn): an admin session token")
def admin_sign_in(call: Call) -> object:
    return admin.sign_in(call)


@api.route("/admin/api/session", "DELETE", endpoint="", signed=True, model=admin_requests.SignOutRequest,
           summary="Operator sign-out: revoke the session (Authorization) it carries")
def admin_sign_out(call: Call) -> object:
    return admin.sign_out(call)


@api.route("/admin/api/overview", "GET", endpoint="", signed=True, model=admin_requests.OverviewQuery,
           summary="Operator: environments and their load, drains, free tiers, the provider's gas per chain")
def admin_overview(call: Call) -> object:
    return admin.overview(call)


@api.route("/admin/api/jobs", "GET", endpoint="", signed=True, model=admin_requests.JobsQuery,
           summary="Operator: every job, newest first, by environment, status or consumer (paged: next)")
def admin_jobs(call: Call) -> object:
    return admin.jobs(call)


@api.route("/admin/api/jobs/stop", "POST", endpoint="", in_body=True, signed=True, model=admin_requests.StopJobRequest,
           summary="Operator: stop any job", responses={"404": "Unknown job"})
def admin_stop_job(call: Call) -> object:
    return admin.stop_job(call)


@api.route("/admin/api/environments/drain", "POST", endpoint="", in_body=True, signed=True,
           model=admin_requests.DrainRequest,
           summary="Operator: drain an environment (no new starts; running jobs finish) or accept starts again",
           responses={"404": "Unknown environment"})
def admin_drain(call: Call) -> object:
    return admin.drain(call)


@api.route("/admin/api/payments", "GET", endpoint="", signed=True, model=admin_requests.PaymentsQuery,
           summary="Operator: escrow payments per chain (newest first): earnings, claims, cancels, failures")
def admin_payments(call: Call) -> object:
    return admin.payments(call)


@api.route("/admin/api/free", "GET", endpoint="", signed=True, model=admin_requests.FreeTierQuery,
           summary="Operator: the free tiers' use per consumer")
def admin_free_tier(call: Call) -> object:
    return admin.free_tier(call)
@api.route("/node/api/aquarius/assets/ddo/validate", "POST", endpoint="", in_body=True, signed=True,
           model=node_requests.NodeValidateDdoRequest,
           summary="A DDO checked for publishing and the metaDataHash to set with it, signed by the provider "
                   "(signed: publisherAddress + nonce + validateDDO)")
def node_validate_ddo(call: Call) -> object:
    return node_assets.validate_ddo(call)


@api.route("/node/api/aquarius/assets/ddo/{did}", "GET", endpoint="", model=node_requests.DdoPath,
           summary="An asset's DDO in Ocean Node's shape (datatokens, indexedMetadata); unsigned, read-only",
           responses={"404": "Unknown asset"})
def node_ddo(call: Call) -> object:
    return node_assets.ddo(call)


@api.route("/node/api/aquarius/assets/metadata/{did}", "GET", endpoint="", model=node_requests.DdoPath,
           summary="The same as assets/ddo/{did}, as Ocean Node answers it", responses={"404": "Unknown asset"})
def node_ddo_metadata(call: Call) -> object:
    return node_assets.ddo(call)


@api.route("/node/directCommand", "POST", endpoint="", in_body=True, model=node_requests.DirectCommandRequest,
           summary="Ocean Node's command envelope: only {\"command\": \"status\"} (the node's peer id, keys, chains)")
def node_direct_command(call: Call) -> object:
    return node_assets.direct_command(call)


# ocean.py appends v4 paths to an asset's serviceEndpoint: at <api>/node its requests are told apart
# from Ocean Node's by what they carry and answered by the v4 routes (chalicelib.node.ocean_py).
for _v4 in [op for op in api.operations if not is_node_operation(op) and op.endpoint in (*ocean_py.AT_NODE, *ocean_py.V4_ONLY)]:
    api.route(PREFIX + _v4.path, _v4.method, endpoint="", model=_v4.model, summary=f"ocean.py's v4 {_v4.endpoint} at /node",
              signed=_v4.signed, in_body=_v4.in_body, responses=_v4.responses, raw_body=_v4.raw_body,
              accepts=ocean_py.accepts(_v4.endpoint, _v4.model) if _v4.endpoint in ocean_py.AT_NODE else None)(_v4.function)


@app.on_cw_event({"source": ["aws.batch"], "detail-type": ["Batch Job State Change"]}, name="batch_job_events")
def batch_job_events(event: object) -> object:
    """AWS Batch state changes of our jobs -> job status (compute.events)."""
    return _job_event("batch_job_events", event)


@app.on_cw_event({"source": ["ocean.c2d.runner"], "detail-type": ["Compute Job Stage Change"]},
                 name="runner_stage_events")
def runner_stage_events(event: object) -> object:
    """The job runner's stage events (configure/publish) -> job status and results."""
    return _job_event("runner_stage_events", event)


def _job_event(function: str, event: object) -> dict:
    """One event, one log line (chalicelib.observability): the job, what the event did, its status."""
    from chalicelib.compute.events import handle_lambda_event

    with observability.invocation("event", function, function=function):
        answer = handle_lambda_event(event, services.job_events())
        observability.annotate(jobId=answer.get("jobId"), action=answer.get("action"), jobStatus=answer.get("status"),
                               outcome="ok")
        return answer


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reconcile_jobs")
def reconcile_jobs(event: object) -> dict:
    """Every minute: end starts killed before dispatch, apply Batch states whose events were lost,
    stop algorithms that outlived their deadline (compute.deadlines)."""
    from chalicelib.compute.reconcile import build_reconciler
    from chalicelib.observability import health

    with observability.invocation("schedule", "reconcile_jobs", function="reconcile_jobs"):
        report = build_reconciler().run()
        health.after_reconcile(report)  # repairs, jobs past deadline, gas balances: what the alarms read
        return report.as_dict()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="index_assets")
def index_assets(event: object) -> dict:
    """Every minute: the chains' metadata events since the last run; assets whose services
    point at this provider are registered (chalicelib.assets.indexer)."""
    from chalicelib.assets.indexer import build_indexer

    return {"chains": build_indexer().run()}


@app.lambda_function(name="register_asset")
def register_asset(event: dict, context: object) -> dict:
    """Operators register a published NFT ({"chainId", "nftAddress", "txHash"?, "fromBlock"?})
    so its DDO resolves on chain: `aws lambda invoke` does what `python -m chalicelib.assets.register` does."""
    from chalicelib.assets.register import handle_event

    with observability.invocation("invoke", "register_asset", function="register_asset"):
        return handle_event(event)
