"""Results released only when the data owner agrees (issue 22).

**Which jobs.** A job is held when any of its datasets requires it, decided at its start and
kept in its record (`release`):

- the operator's RELEASE_REQUIRED lists the dataset's did, or its publisher (the owner of its
  data NFT at the start); or
- the dataset's compute service says so in its DDO: `"releaseRequired": true` in the service's
  `compute` options, or in its `additionalInformation` (the place Ocean's DDO schema leaves for
  custom fields, so a DDO that must pass Aquarius' validation puts it there).

**While held.** The job runs as any other and ends as any other (its slot freed, its escrow
claimed: the compute ran, whatever the decision). A job that would end 70 ends at 75 "Awaiting
release" instead (Ocean Node uses no 75: its codes stop at 71); any other end keeps its code.
Neither the consumer's computeResult, nor the status' URLs, nor computeStreamableLogs give
anything of it (outputs and logs alike: an algorithm's log can carry the data as well as its
outputs); the status object says `release`.

**The decision.** The publisher of each dataset that required it (still its NFT owner: the one
who sees the job in its audit log) reviews the outputs and logs through computeAuditResult, then
releases or refuses with a signed computeRelease. Released by every publisher who must agree:
the job moves 75 → 70 and computeResult answers the consumer. Refused by any of them: its
outputs are deleted (every version), its logs kept, the job moves 75 → 76 "Results refused by
the data owner", and its receipt says so. These two moves are the only ones out of a terminal
status, made by a conditional write on the record (the status and the release as read), so a
decision is taken once and two decisions cannot both win.

**Unanswered.** A request not decided within the environment's storageExpiry after the job
ended has expired: from then on it reads as refused by nobody ("expired"), no decision is taken
and nothing is served; the outputs go with the job's other objects (the bucket's lifecycle,
JobDataExpirationDays, at least every storageExpiry).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pynamodb.exceptions import PynamoDBException, UpdateError

from chalicelib.compute import status as st
from chalicelib.errors import BusinessError, ServiceUnavailable
from chalicelib.models import JobRecord

log = logging.getLogger(__name__)

PENDING, RELEASED, REFUSED, EXPIRED = "pending", "released", "refused", "expired"
HELD = "The job's results await its data owner's release"
WERE_REFUSED = "The job's data owner refused to release its results; the outputs were deleted"
HAS_EXPIRED = "The job's data owner did not release its results in time; they will not be released"


@dataclass(frozen=True)
class ReleasePolicy:
    """RELEASE_REQUIRED: dids and publisher addresses (lower case) whose datasets hold results."""

    listed: frozenset[str] = frozenset()

    def required(self, did: str, publisher: Optional[str], service: Mapping[str, Any]) -> bool:
        if did.lower() in self.listed or (publisher and publisher.lower() in self.listed):
            return True
        for place in (service.get("compute"), service.get("additionalInformation")):
            if isinstance(place, Mapping) and place.get("releaseRequired") is True:
                return True
        return False

    def held(self, inputs: Sequence[tuple[str, Optional[str], Mapping[str, Any]]]) -> Optional[dict[str, Any]]:
        """A new job's `release` record: the dids whose publishers must agree; None if none."""
        required = sorted({did for did, publisher, service in inputs if self.required(did, publisher, service)})
        return {"required": required, "state": PENDING, "decisions": {}} if required else None


def storage_expiry(job: JobRecord) -> int:
    """The job's environment's storageExpiry (its default when the environment is gone)."""
    from chalicelib.compute.environments import environments

    environment = environments().get(job.environment)
    return environment.storage_expiry if environment is not None else 604800


def withheld(job: JobRecord) -> bool:
    """Whether nothing of the job's results may reach its consumer now."""
    return state(job, storage_expiry(job)) not in (None, RELEASED)


def state(job: JobRecord, storage_expiry: int, now: Optional[float] = None) -> Optional[str]:
    """Where the job's release stands (None: not held): pending, released, refused, or expired
    (pending after the environment's storageExpiry from the job's end)."""
    release = job.release if isinstance(job.release, Mapping) else None
    if not release:
        return None
    current = str(release.get("state") or PENDING)
    if current == PENDING and job.date_finished and (now or time.time()) > int(job.date_finished) + storage_expiry:
        return EXPIRED
    return current


def require_released(job: JobRecord, storage_expiry: int) -> None:
    """What the consumer may download: refused with the reason while held, refused or expired."""
    current = state(job, storage_expiry)
    if current in (None, RELEASED):
        return
    raise BusinessError({PENDING: HELD, REFUSED: WERE_REFUSED, EXPIRED: HAS_EXPIRED}[current])


def view(job: JobRecord, storage_expiry: int) -> Optional[dict[str, Any]]:
    """The status object's `release` (None when the job is not held)."""
    current = state(job, storage_expiry)
    if current is None:
        return None
    release = job.release
    expires = int(job.date_finished) + storage_expiry if job.date_finished else None
    return {"state": current, "required": list(release.get("required") or []), "expiresAt": expires,
            "decisions": dict(release.get("decisions") or {})}


class ReleaseDecisions:
    """Takes a publisher's decision on a held job (see the module docstring)."""

    def __init__(self, delete_outputs: Callable[[str], int], jobs: type[JobRecord] = JobRecord,
                 clock: Callable[[], float] = time.time) -> None:
        self._delete_outputs = delete_outputs
        self._jobs = jobs
        self._clock = clock

    def decide(self, job: JobRecord, did: str, publisher: str, decision: str, storage_expiry: int) -> JobRecord:
        """Record `publisher`'s `decision` ("release" or "refuse") for dataset `did` of `job`; the
        job moves when the outcome is known. Returns the record as written."""
        now = int(self._clock())
        current = state(job, storage_expiry, now)
        if current is None or did not in (job.release or {}).get("required", []):
            raise BusinessError("This job's results do not await this dataset's release")
        if not st.is_terminal(int(job.status)):
            raise BusinessError("The job has not ended yet; decide once it has")
        if current == EXPIRED:
            raise BusinessError(HAS_EXPIRED)
        if current == REFUSED and decision == "refuse" and not job.release.get("outputsDeleted"):
            self._refused(job)  # the same refusal again finishes one whose outputs were not all deleted
            return job
        if current != PENDING:
            raise BusinessError(f"The job's results were already {current}")
        decisions = dict(job.release.get("decisions") or {})
        if did in decisions:
            raise BusinessError(f"This dataset's decision was already taken: {decisions[did]['decision']}")
        decisions[did] = {"decision": "released" if decision == "release" else "refused", "by": publisher.lower(),
                          "at": now}
        refused = decision == "refuse"
        everyone = all(decisions.get(name, {}).get("decision") == RELEASED for name in job.release["required"])
        outcome = REFUSED if refused else RELEASED if everyone else PENDING
        release = {**job.release, "decisions": decisions, "state": outcome}
        actions = [self._jobs.release.set(release), self._jobs.updated_at.set(now)]
        status = int(job.status)
        if status == st.AWAITING_RELEASE and outcome != PENDING:
            target = st.COMPLETED if outcome == RELEASED else st.RESULTS_REFUSED
            actions += [self._jobs.status.set(target), self._jobs.status_text.set(st.status_text(target))]
        try:
            job.update(actions=actions, condition=(self._jobs.status == status) & (self._jobs.release == job.release))
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise BusinessError("The job changed meanwhile (another decision?); read it again") from None
            raise ServiceUnavailable("Job store is unavailable, try again later") from error
        except PynamoDBException as error:
            raise ServiceUnavailable("Job store is unavailable, try again later") from error
        if refused:
            self._refused(job)
        return job

    def _refused(self, job: JobRecord) -> None:
        """Delete the outputs, keep the logs; the receipt then says the outputs were deleted."""
        deleted = self._delete_outputs(job.job_id)
        try:
            job.update(actions=[self._jobs.release.set({**job.release, "outputsDeleted": True})])
        except PynamoDBException:
            log.error("job %s: outputs deleted (%d) but not recorded as such", job.job_id, deleted)
        log.info("job %s: results refused by a data owner, %d output versions deleted", job.job_id, deleted)
