"""What each Ocean Node route does with a validated call; app.py maps the `/node` routes here.

Every call goes to the core the v4 routes use: the same authenticator (one nonce space per
address), compute workflow, job service and token service. Ocean Node's own gaps are not copied:
status never shows another owner's URLs, logs and results are the owner's and its
additionalViewers' only (who may read a job, never stop it), a token must be the caller's, and
invalidation checks its signature.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from chalice import Response

from chalicelib import budget, services
from chalicelib.compute.environments import MIN_JOB_SECONDS, Environment, environments, fill_resources
from chalicelib.compute.job_options import JobOptions
from chalicelib.compute.job_status import JobPage, status_object
from chalicelib.compute.registry_auth import FIELD as REGISTRY_AUTH_FIELD
from chalicelib.compute.registry_auth import decrypt_login
from chalicelib.compute.requests import ComputeStartRequest, InitializeComputeRequest
from chalicelib.errors import BusinessError, NotFound, ValidationError
from chalicelib.http import Call, Operation
from chalicelib.node import PREFIX, is_node_operation
from chalicelib.node import environments as views
from chalicelib.node import free
from chalicelib.owner import release
from chalicelib.payments import paid_start
from chalicelib.root import SOFTWARE, VERSION

NO_LOG = "No log exists for this job yet"


# -- discovery ---------------------------------------------------------------------------------

def root_document(operations: Iterable[Operation], chain_ids: list[int], provider_address: str,
                  public_key: str) -> dict[str, Any]:
    """GET /node: what ocean.js reads, paths relative to the prefix (it joins `<providerUri>/<path>`).

    ocean.py reads the same document when an asset's serviceEndpoint is `<api>/node`, but joins
    each path to the host's root (urljoin of an absolute path), so it speaks v4 at `/` whatever
    the prefix: the v4 names Ocean Node's protocol lacks (computeDelete, create_auth_token,
    delete_auth_token) are listed too, with their root paths, for it. ocean.js never asks for them."""
    listed = {op.endpoint: [op.method, op.path[len(PREFIX):]] for op in operations if op.endpoint and is_node_operation(op)}
    v4_only = {op.endpoint: [op.method, op.path] for op in operations
               if op.endpoint and not is_node_operation(op) and op.endpoint not in listed}
    return {
        "software": SOFTWARE,
        "version": VERSION,
        "protocol": "ocean-node",
        "chainIds": chain_ids,
        "providerAddress": provider_address,
        "providerAddresses": {str(chain_id): provider_address for chain_id in chain_ids},
        "nodePublicKey": public_key,
        "serviceEndpoints": {**v4_only, **listed},
    }


def compute_environments(call: Call) -> list[dict[str, Any]]:
    configured = environments()
    keys = [*configured, *(free.free_key(e) for e in configured.values() if e.free_tier)]
    counts = services.usage_counter().current(keys)
    listed = views.listing(configured, services.settings().chain_ids, services.provider_address(), counts, free.free_key)
    escrow_chains = [chain for chain in services.settings().chain_ids if paid_start.escrow_chain(chain)]
    if escrow_chains and listed:
        # the provider's gas (wei) per escrow chain: what pays for its locks and claims
        balances = services.payments().gas_balances(escrow_chains)
        for view in listed:
            view["providerGasBalance"] = {chain: balance for chain, balance in balances.items() if chain in view["fees"]}
    return listed


# -- compute -----------------------------------------------------------------------------------

@budget.with_deadline
def initialize(call: Call, deadline: budget.Deadline) -> dict[str, Any]:
    """Ocean Node's request, answered with the v4 quotes (providerFee per dataset and algorithm,
    or validOrder) and, for `payment{chainId, token}` on an escrow chain, the escrow `payment`
    {escrowAddress, payee, chainId, token, amount (smallest unit), minLockSeconds}."""
    params = call.params
    environment = _environment(params.environment)
    payment = params.payment
    fill_resources(environment, payment.resources if payment else None)
    seconds = min(params.maxJobDuration or environment.max_job_duration, environment.max_job_duration)
    request = InitializeComputeRequest.model_validate({
        "datasets": [d.model_dump(exclude_none=True) for d in params.datasets],
        "algorithm": params.algorithm.model_dump(exclude_none=True),
        "compute": {"env": environment.id, "validUntil": int(time.time()) + max(MIN_JOB_SECONDS, seconds)},
        "consumerAddress": params.consumerAddress,
        "chainId": params.payment.chainId if params.payment else None,
    })
    escrow = payment is not None and paid_start.wants_escrow(environment, payment.chainId, payment.token)
    # one price, paid once: with the escrow paying for the compute, the orders' providerFee carries none
    answer = services.compute_workflow().initialize(request, compute_in_fee=not escrow)
    if escrow:
        answer["payment"] = paid_start.quote(services.payments(), environment, payment.chainId, payment.token,
                                             payment.resources, params.maxJobDuration).public()
    return answer


@budget.with_deadline
def start(call: Call, deadline: budget.Deadline) -> list[dict[str, Any]]:
    """Paid start with orders, as v4's (the job's time is what the provider fee paid for); with
    `payment{chainId, token}` on an escrow chain, the job is also locked in escrow before it is
    dispatched (payments.paid_start)."""
    consumer = call.caller
    params = call.params
    environment = _environment(params.environment)
    services.access_lists().require(environment.access, consumer, f"compute environment {environment.id}")
    payment = params.payment
    requested = params.resources or (payment.resources if payment else None)
    fill_resources(environment, requested)
    gate = paid_start.escrow_lock(services.payments, environment, payment, params.chainId, params.maxJobDuration,
                                  requested, consumer, deadline)
    first, *more = params.datasets
    # the v4 request the workflow takes; the caller is already authenticated (its nonce, if any,
    # consumed above), so the nonce here is only a placeholder the model requires
    request = ComputeStartRequest.model_validate({
        "consumerAddress": consumer, "nonce": params.nonce or "0", "environment": params.environment,
        "dataset": first.model_dump(exclude_none=True), "algorithm": params.algorithm.model_dump(exclude_none=True),
        "additionalDatasets": [d.model_dump(exclude_none=True) for d in more],
    })
    options = _job_options(params, consumer)
    if gate is None:
        paid_start.refuse_unpaid(environment, payment, params.chainId)
        return [status_object(services.compute_workflow().start(request, consumer, deadline, options=options), None)]
    job = services.compute_workflow().start(request, consumer, deadline, gate=gate, max_seconds=gate.max_job_duration,
                                            compute_in_fee=False, options=options)
    answer = status_object(job, None)
    view = services.payments().view(job.job_id)
    if view is not None:
        answer["payment"] = node_payment(view)  # Ocean Node's job.payment: lockTx sent (mined unless the job is still at 1)
    return [answer]


def _job_options(params: Any, consumer: str) -> JobOptions:
    """The start's options; `encryptedDockerRegistryAuth` decrypted with the provider key (400
    naming the field when it cannot be read; refused where no image is pulled)."""
    login = None
    if params.encryptedDockerRegistryAuth is not None:
        if services.registry_secrets() is None:
            raise ValidationError.field(REGISTRY_AUTH_FIELD, "not supported: this compute backend pulls no image")
        login = decrypt_login(services.settings().provider_private_key(), params.encryptedDockerRegistryAuth)
    return params.job_options(consumer, login)


def node_payment(view: dict[str, Any]) -> dict[str, Any]:
    """Ocean Node's `payment` of a job: {chainId, token, lockTx, claimTx, cancelTx, cost}; cost is
    what was claimed (the token's smallest unit), 0 until the claim."""
    def tx_hash(kind: str) -> str | None:
        tx = view.get(kind)
        return tx.get("hash") if isinstance(tx, dict) else None

    return {"chainId": view["chainId"], "token": view["token"], "lockTx": tx_hash("lock"),
            "claimTx": tx_hash("claim"), "cancelTx": tx_hash("cancel"), "cost": str(view.get("claimed") or 0)}


@budget.with_deadline
def free_start(call: Call, deadline: budget.Deadline) -> list[dict[str, Any]]:
    """A job on the environment's free tier: no order, the tier's access and limits, allowed
    publishers' datasets only, within the provider's free-start rates (429 beyond them)."""
    consumer = call.caller
    params = call.params
    environment = _environment(params.environment)
    tier = free.tier_of(environment, consumer, services.access_lists())
    fill_resources(environment, params.resources)
    # no order pays for a free job: an order id sent along is dropped, never shown as its agreement
    datasets = [dataset.model_copy(update={"transferTxId": None}) for dataset in params.datasets]
    algorithm = params.algorithm.model_copy(update={"transferTxId": None})
    current = services.settings()
    creators, rates = services.nft_creators(), services.start_rates()
    taken: list[Any] = []
    options = _job_options(params, consumer)

    def admit(planned: Any) -> None:
        """Before the algorithm is downloaded: the free tier's publishers, then its rates."""
        free.check_publishers(planned, current.free_compute_publishers, creators)
        taken.append(rates.take(free.start_rates(consumer, current.free_starts_per_minute,
                                                 current.free_starts_per_consumer_per_hour)))

    try:
        plan = services.compute_workflow().plan_free(consumer, environment.id, datasets, algorithm, admit=admit,
                                                     registry_login=options.registry_login)
        job = services.job_service().start(plan, consumer, [], free.job_seconds(tier, params.maxJobDuration),
                                           slots=free.slots(environment, tier, consumer), deadline=deadline,
                                           options=options)
    except Exception:
        for each in taken:
            rates.give_back(each)  # a start refused (a full tier) or failed takes nothing from the rate
        raise
    return [status_object(job, None)]


def status(call: Call) -> list[dict[str, Any]]:
    """Unsigned, as ocean.js asks: the consumer's jobs, reduced (no URL of any kind); a job asked
    for by its id also for one of its additionalViewers. The escrow payment: its owner's only."""
    params = call.params
    page = services.job_service().find(services.checksum(params.consumerAddress), params.jobId, for_status=True,
                                       viewer=True)
    jobs = page.jobs  # without jobId: the newest page (compute.paging)
    if params.agreementId:
        jobs = [job for job in jobs if (job.agreement_id or "").lower() == params.agreementId.lower()]
    answer = services.job_service().status_objects(JobPage(jobs), with_urls=False)[0]
    if answer and services.escrow_enabled() and _is_owner(call, params.consumerAddress):
        for body in answer:
            if body["owner"].lower() != params.consumerAddress.lower():
                continue  # a viewer's read: the money is the owner's business
            view = services.payments().view(body["jobId"])
            if view is not None:
                # Ocean Node's payment fields, and ours: the escrow lock and its claim (hashes, nonces, amounts)
                body["payment"] = {**view, **node_payment(view)}
    return answer


def _is_owner(call: Call, address: str) -> bool:
    """Whether the status call proves it is `address` (ocean.js sends its `Authorization`
    token): only then does the status show the job's escrow payment."""
    token = services.presented_token(call)
    if not token:
        return False
    try:
        services.token_service().verify(token, services.checksum(address))
    except Exception:  # noqa: BLE001 - an invalid token just gets the reduced status
        return False
    return True


def stop(call: Call) -> list[dict[str, Any]]:
    owner = call.caller
    params = call.params
    job = services.job_service().find_one(owner, params.jobId)
    if params.agreementId and (job.agreement_id or "").lower() != params.agreementId.lower():
        raise NotFound("Job not found")
    return services.job_service().status_objects(services.job_service().stop(owner, job.job_id, None), with_urls=False)[0]


def result(call: Call) -> Response:
    """302 to a short-lived URL of result `index` (the order of the status object's `results`)."""
    url = services.job_service().result_url(call.caller, call.params.jobId, call.params.index_value)
    return Response(body="", status_code=302, headers={"Location": url, "Cache-Control": "no-store"})


def streamable_logs(call: Call) -> Response:
    """The algorithm's log so far, to its owner and additionalViewers only; 404 while none exists."""
    job = services.job_service().find_one(call.caller, call.params.jobId, viewer=True)
    if release.withheld(job):  # the algorithm's log may carry the data as well as its outputs
        raise NotFound(release.HELD)
    content = services.algorithm_logs().read(job)
    if content is None:
        raise NotFound(NO_LOG)
    return Response(body=content.decode("utf-8", "replace"), status_code=200,
                    headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})


# -- auth tokens -------------------------------------------------------------------------------

def create_token(call: Call) -> dict[str, Any]:
    tokens = services.token_service()
    expiration = tokens.check_expiration(_expiration(call.params.validUntil, services.settings().token_max_lifetime))
    # ocean.js 8 signs `address + nonce + createAuthToken`, ocean.js 9 appends the node's peer id
    # (NodeCreateTokenRequest.other_commands); the http layer checked either and spent the nonce
    return {"token": tokens.create(call.caller, expiration)}


def invalidate_token(call: Call) -> dict[str, Any]:
    tokens = services.token_service()
    tokens.revoke(tokens.revocable_claims(call.params.token, call.caller))
    return {"success": True}


# -- helpers -----------------------------------------------------------------------------------

def _environment(environment_id: str) -> Environment:
    found = environments().get(environment_id)
    if found is None:
        raise BusinessError("Compute environment does not exist")
    return found


def _expiration(valid_until: object, max_lifetime: int) -> int:
    """Ocean Node's optional validUntil (seconds or ms); default: the longest lifetime allowed."""
    now = int(time.time())
    if valid_until in (None, ""):
        return now + max_lifetime
    value = int(str(valid_until))
    return value // 1000 if value > 10**11 else value
