"""What a start records so that anyone can finish it (the consumer's retry, the reconciler), and
the one conditional path from a job record to its Batch job (`compute.job_starts` decides when).

A start records, with the job itself (one transaction, `compute.job_reservations`):

- `dispatchSpec`: the SubmitJob parameters of the validated plan (container, time limit, inputs,
  network policy). The manifest (decrypted URLs) goes to S3 right after, never into the record.
  Whoever finishes the start needs nothing the request held: a paid start whose lock is not
  mined within the request answers with its job at 1, and the reconciler dispatches it later.
- `startKey`: a fingerprint of the request (inputs, algorithm, environment; not its nonce). A
  retry by the same owner with the same orders is the same start (`JobService.start` returns
  that job); only a retry with the same fingerprint may write the manifest again.
- `dispatchLease`: until when one dispatcher alone may submit. Taken by a conditional write
  right before SubmitJob (the job still at 1, no Batch job, no live lease: a job stopped
  meanwhile is not submitted) and removed by the write that records the Batch job. A start
  waiting for its lock holds none, so the same start again can finish it at once. Only the
  reconciler takes over a lease whose holder died, after Batch said it has no job of that name
  (a holder that died after SubmitJob must not get a twin).

The record of the Batch job is conditional too (none recorded yet); if a stop landed between the
lease and that record (the record's answer shows the job ended), the Batch job is terminated at
once. A stop conditions its own write on the Batch job id it read (`JobService._move`), so one of
the two always sees the other: nothing runs after a stop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pynamodb.exceptions import PynamoDBException, UpdateError

from chalicelib.compute import status as st
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.dispatch import Dispatcher
from chalicelib.compute.environments import Environment
from chalicelib.compute.plan import ComputePlan
from chalicelib.models import JobRecord

log = logging.getLogger(__name__)

DISPATCH_LEASE = 90  # s: a request lives at most 29 s; a holder past this is dead


@dataclass(frozen=True)
class DispatchSpec:
    """The SubmitJob parameters of a validated plan, as the job record keeps them."""

    container: Mapping[str, Any]
    timeout: int | None
    dids: Sequence[str]
    algorithm_did: str
    allow_network: bool
    registry_secret: str = ""  # ARN of the consumer's registry login for this job (compute.registry_auth)

    @classmethod
    def of_plan(cls, plan: ComputePlan, timeout: int | None, registry_secret: str = "") -> "DispatchSpec":
        return cls(dict(plan.algorithm.container), timeout, [dataset.did for dataset in plan.datasets],
                   plan.algorithm.did, plan.allow_network, registry_secret)

    def record(self) -> dict[str, Any]:
        recorded = {"container": dict(self.container), "timeout": self.timeout, "dids": list(self.dids),
                    "algorithmDid": self.algorithm_did, "allowNetwork": self.allow_network}
        if self.registry_secret:
            recorded["registrySecret"] = self.registry_secret
        return recorded

    @classmethod
    def of_record(cls, job: JobRecord) -> "DispatchSpec | None":
        data = job.dispatch_spec
        if not isinstance(data, dict):
            return None  # a job recorded before starts were finishable
        return cls(data["container"], data.get("timeout"), data.get("dids", []), data.get("algorithmDid", ""),
                   bool(data.get("allowNetwork")), str(data.get("registrySecret") or ""))


def start_fingerprint(plan: ComputePlan) -> str:
    """What identifies a start's request beyond its orders: environment, inputs and algorithm
    (the raw code by its hash), never the decrypted files."""
    algorithm = plan.algorithm
    identity = {
        "environment": plan.environment.id,
        "datasets": [[d.did, d.service_id, (d.transfer_tx_id or "").lower(), d.userdata] for d in plan.datasets],
        "algorithm": [algorithm.did, (algorithm.order.transfer_tx_id or "").lower() if algorithm.order else "",
                      hashlib.sha256(algorithm.rawcode.encode()).hexdigest(), algorithm.container,
                      algorithm.algocustomdata, algorithm.userdata],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class StartDispatch:
    """The lease and the conditional submit of a recorded start."""

    def __init__(self, jobs: type[JobRecord], dispatcher: Callable[[], Dispatcher],
                 environments: Callable[[], Mapping[str, Environment]], clock: Callable[[], float] = time.time) -> None:
        self._jobs = jobs
        self._dispatcher = dispatcher
        self._environments = environments
        self._clock = clock

    def lease_until(self, now: float | None = None) -> int:
        return int(self._clock() if now is None else now) + DISPATCH_LEASE

    def take(self, job: JobRecord, now: float, *, take_over: bool = False) -> bool:
        """The lease of a job still at 1 with no Batch job, if nobody holds it (`take_over`: or
        its holder's time is up). False when the job moved or someone else holds it."""
        jobs = self._jobs
        free = jobs.dispatch_lease.does_not_exist()
        if take_over:
            free |= jobs.dispatch_lease < int(now)
        try:
            job.update(actions=[jobs.dispatch_lease.set(self.lease_until(now))],
                       condition=(jobs.status == st.WARMING_UP) & jobs.batch_job_id.does_not_exist() & free)
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def submit(self, job: JobRecord, manifest_uri: str, *, now: float | None = None, take_over: bool = False) -> bool:
        """Take the lease, SubmitJob, record it; False (nothing submitted, `job` re-read) when the
        job moved (stopped, dispatched) or another dispatcher holds it. Dispatcher errors
        propagate with the lease still held (nothing ran: the undo ends the job)."""
        if not self.take(job, self._clock() if now is None else now, take_over=take_over):
            job.refresh(consistent_read=True)
            return False
        spec = DispatchSpec.of_record(job)
        if spec is None:
            raise LookupError(f"job {job.job_id} has no dispatch spec")
        environment = self._environments()[job.environment]
        batch_job_id = self._dispatcher().submit(
            job.job_id, environment, manifest_uri, AlgorithmContainer.from_metadata(spec.container), spec.timeout,
            dids=spec.dids, algorithm_did=spec.algorithm_did, allow_network=spec.allow_network,
            runner_key=job.runner_key, **({"registry_secret": spec.registry_secret} if spec.registry_secret else {}),
        )
        self._record(job, batch_job_id)
        return True

    def _record(self, job: JobRecord, batch_job_id: str) -> None:
        """Record the Batch job where none is; a job that ended meanwhile (a stop between our
        re-read and now) has its Batch job terminated at once."""
        jobs = self._jobs
        try:
            job.update(actions=[jobs.batch_job_id.set(batch_job_id), jobs.dispatch_lease.remove()],
                       condition=jobs.batch_job_id.does_not_exist())
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
                job.refresh(consistent_read=True)  # an event recorded it first
            else:
                # The Batch job runs and its events (or the reconciler, by its name) find the record.
                log.error("job %s: Batch job %s submitted but not recorded", job.job_id, batch_job_id)
                job.batch_job_id = batch_job_id
                return
        except PynamoDBException:
            log.error("job %s: Batch job %s submitted but not recorded", job.job_id, batch_job_id)
            job.batch_job_id = batch_job_id
            return
        if job.batch_job_id != batch_job_id:
            log.error("job %s: follows Batch job %s; the twin %s is terminated", job.job_id, job.batch_job_id,
                      batch_job_id)
            self._dispatcher().terminate(batch_job_id, "Job stopped by its owner")
        elif st.is_terminal(int(job.status)):
            log.warning("job %s: ended (%s) while it was submitted; Batch job %s terminated", job.job_id,
                        job.status, batch_job_id)
            self._dispatcher().terminate(batch_job_id, "Job stopped by its owner")
