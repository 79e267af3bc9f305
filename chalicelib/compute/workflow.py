"""The compute routes' work, in order: resolve the assets, decrypt their files inside the
provider, validate the request (compute.validation), check every order on chain
(chain.orders), then start the job (compute.jobs) or quote the fees (initializeCompute).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

from chalicelib.assets.files import FilesUnavailable
from chalicelib.budget import Deadline
from chalicelib.chain.fees import ProviderFees
from chalicelib.chain.orders import OrderVerifier, VerifiedOrder, ensure_fees_paid, normalize_tx_id
from chalicelib.compute.environments import MIN_JOB_SECONDS
from chalicelib.compute.image_digests import RegistryLogin
from chalicelib.compute.job_options import JobOptions
from chalicelib.compute.job_reservations import Order
from chalicelib.compute.jobs import DispatchGate, JobService
from chalicelib.compute.requests import (
    AlgorithmInput, ComputeStartRequest, DatasetInput, FreeDatasetInput, InitializeComputeRequest,
)
from chalicelib.compute.input_rules import find_service
from chalicelib.compute.plan import ComputePlan, PlannedOrder, Resolved, input_resource
from chalicelib.compute.validation import ComputeValidator
from chalicelib.errors import BusinessError
from chalicelib.models import JobRecord


class ComputeWorkflow:
    def __init__(
        self,
        resolver: Any,
        validator: ComputeValidator,
        verifier: OrderVerifier,
        fees: ProviderFees,
        jobs: JobService,
        current_nonce: Callable[[str], int],
        clock: Callable[[], float] = time.time,
    ):
        self._resolver = resolver
        self._validator = validator
        self._verifier = verifier
        self._fees = fees
        self._jobs = jobs
        self._current_nonce = current_nonce
        self._clock = clock

    def start(self, request: ComputeStartRequest, consumer: str, deadline: Deadline | None = None, *,
              gate: DispatchGate | None = None, max_seconds: int | None = None,
              compute_in_fee: bool = True, options: JobOptions = JobOptions()) -> JobRecord:
        """Validate everything, verify every order, then start the job (one order, one job) if
        `deadline` leaves the time a start needs once it has reserved. `gate`: what must hold
        before the dispatch (an escrow lock); `max_seconds`: a further cap of the job's time.
        `compute_in_fee` False: the compute is paid elsewhere (Ocean Node's escrow), so the
        orders' providerFee need not carry its price (one price, paid once)."""
        plan = self._validator.validate_start(request, self._resolve_datasets(request.all_datasets),
                                              self._resolve_algorithm(request.algorithm), options.registry_login)
        made = self._jobs.same_start(plan, consumer, planned_orders(plan), deadline)
        if made is not None:
            return made  # the same start again: its job (finished now), whatever its orders' fees say now
        now = int(self._clock())
        verified = [(order, self._verify(order, plan, consumer)) for order in plan.orders()]
        priced = plan.environment if compute_in_fee else dataclasses.replace(plan.environment, free=True)
        paying = ensure_fees_paid([v for o, v in verified if o.resource != "algorithm"], self._fees, priced, now)
        timeout = min(plan.environment.max_job_duration, max(MIN_JOB_SECONDS, int(paying.valid_until) - now))
        if max_seconds is not None:
            timeout = min(timeout, max_seconds)
        orders = [Order(order.resource, order.chain_id, result.tx_id) for order, result in verified]
        plan = dataclasses.replace(plan, fee={"chainId": paying.chain_id, "token": paying.provider_fee_token,
                                              "amount": str(paying.provider_fee_amount), "order": paying.tx_id})
        return self._jobs.start(plan, consumer, orders, timeout, deadline=deadline, gate=gate, options=options)

    def plan_free(self, consumer: str, environment_id: str, datasets: Sequence[FreeDatasetInput],
                  algorithm: AlgorithmInput, admit: Optional[Callable[[ComputePlan], None]] = None,
                  registry_login: Optional[RegistryLogin] = None) -> ComputePlan:
        """Everything a start validates except the orders (Ocean Node's free compute), the
        algorithm pinned as a paid start pins it; `admit` judges the plan before that download.
        The caller applies the free tier and starts the job with no order."""
        return self._validator.validate_free(consumer, environment_id, datasets, self._resolve_datasets(datasets),
                                             algorithm, self._resolve_algorithm(algorithm), admit,
                                             registry_login=registry_login)

    def initialize(self, request: InitializeComputeRequest, compute_in_fee: bool = True) -> dict[str, Any]:
        """Provider fees to order with (the main dataset pays for the environment, unless
        `compute_in_fee` is False: the escrow pays for it), and `validOrder` for inputs whose
        given order can be reused."""
        plan = self._validator.validate_initialize(request, self._resolve_datasets(request.all_datasets),
                                                   self._resolve_algorithm(request.algorithm))
        nonce = self._current_nonce(request.consumerAddress)
        datasets = [self._quote(order, plan, request.consumerAddress, nonce, charged=position == 0 and compute_in_fee)
                    for position, order in enumerate(plan.datasets)]
        result: dict[str, Any] = {"datasets": datasets}
        if plan.algorithm.order is not None:
            result["algorithm"] = self._quote(plan.algorithm.order, plan, request.consumerAddress, nonce, charged=False)
        return result

    # -- steps -------------------------------------------------------------------------------

    def _resolve_datasets(self, inputs: Sequence[DatasetInput | FreeDatasetInput]) -> list[Resolved]:
        """Each input's asset and files; a raw input (the consumer's fileObject) has none to find."""
        return [Resolved(None) if not item.documentId
                else self._resolved(item.documentId, item.serviceId, input_resource(index))
                for index, item in enumerate(inputs)]

    def _resolve_algorithm(self, algorithm: AlgorithmInput) -> Optional[Resolved]:
        if algorithm.is_raw or not algorithm.documentId:
            return None
        return self._resolved(algorithm.documentId, algorithm.serviceId, "algorithm")

    def _resolved(self, did: str, service_id: Optional[str], resource: str) -> Resolved:
        """The asset and its service's decrypted files; files None when this provider cannot
        use them (the validator answers with the original's code)."""
        asset = self._resolver.resolve(did, resource)
        found = find_service(asset.ddo, service_id) if service_id is not None else None
        if found is None:
            return Resolved(asset, None)
        try:
            return Resolved(asset, self._resolver.decrypt_files(asset, dict(found[1]), resource))
        except FilesUnavailable:
            return Resolved(asset, None)

    def _verify(self, order: PlannedOrder, plan: ComputePlan, consumer: str, allow_expired_fee: bool = False) -> VerifiedOrder:
        return self._verifier.verify(
            chain_id=order.chain_id, tx_id=order.transfer_tx_id or "", datatoken=order.datatoken,
            service_index=order.service_index, service_id=order.service_id, service_timeout=order.timeout,
            consumer=consumer, environment_id=None if order.resource == "algorithm" else plan.environment.id,
            resource=order.resource, allow_expired_fee=allow_expired_fee,
        )

    def _quote(self, order: PlannedOrder, plan: ComputePlan, consumer: str, nonce: int, charged: bool) -> dict[str, Any]:
        now = int(self._clock())
        valid_until = int(plan.valid_until or now)
        environment = plan.environment if charged else dataclasses.replace(plan.environment, free=True)
        entry: dict[str, Any] = {"datatoken": order.datatoken, "nonce": nonce}
        reusable = self._reusable(order, plan, consumer) if order.transfer_tx_id else None
        if reusable is not None:
            if (reusable.valid_until >= valid_until and not self._jobs.order_used(order.chain_id, reusable.tx_id)
                    and (not charged or self._fee_covers(reusable, plan, valid_until, now))):
                entry["validOrder"] = reusable.tx_id  # start with it as is (one order, one job)
                return entry
            # to be paid again with reuseOrder, which must name the startOrder: the contract takes
            # any tx, but a reuse of a reuse leads to no OrderStarted and is refused at start
            entry["validOrder"] = reusable.order_tx_id
        entry["providerFee"] = self._fees.quote(chain_id=order.chain_id, environment=environment, datatoken=order.datatoken,
                                                service_id=order.service_id, valid_until=valid_until, now=now)
        return entry

    def _reusable(self, order: PlannedOrder, plan: ComputePlan, consumer: str) -> Optional[VerifiedOrder]:
        """The given order if it is still an order of this consumer for this service (its fee may
        have expired: then the consumer reuses it with a new fee instead of buying again)."""
        try:
            return self._verify(order, plan, consumer, allow_expired_fee=True)
        except BusinessError:
            return None

    def _fee_covers(self, order: VerifiedOrder, plan: ComputePlan, valid_until: int, now: int) -> bool:
        try:
            ensure_fees_paid([order], self._fees, plan.environment, now)
        except BusinessError:
            return False
        return order.valid_until >= valid_until


def planned_orders(plan: ComputePlan) -> list[Order]:
    """The orders a start names (before they are verified), as the orders table keys them; none
    when one is missing or malformed (verification answers that)."""
    orders = []
    for order in plan.orders():
        try:
            orders.append(Order(order.resource, order.chain_id, normalize_tx_id(order.transfer_tx_id, order.resource)))
        except BusinessError:
            return []
    return orders
