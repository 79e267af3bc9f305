"""What the data owner's routes do with a validated call, at `/` and `/node` alike (app.py maps
both protocols' routes here): a job's signed receipt, a dataset's audit log, the review downloads
of its jobs' outputs and logs, and the release decision."""
from __future__ import annotations

from typing import Any

from chalice import Response
from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib import services
from chalicelib.compute import status as st
from chalicelib.compute.paging import NEXT_HEADER
from chalicelib.errors import BusinessError, NotFound, ServiceUnavailable, Unauthorized, ValidationError
from chalicelib.http import Call, json_response
from chalicelib.models import JobRecord
from chalicelib.owner import release
from chalicelib.owner.access import input_publishers, may_read_receipt
from chalicelib.owner.audit import AuditLog, audit_item, bounded

NOT_OWNER = "Only the dataset's data NFT owner may read its audit log and decide on its jobs"
NOT_ENDED = "The job has not ended yet; its receipt is made when it does"


def signed_receipt(job: JobRecord) -> dict[str, Any]:
    """The job's receipt signed by the provider key (chalicelib.receipts)."""
    from chalicelib.receipts.document import receipt
    from chalicelib.receipts.signing import sign

    payment = services.payments().view(job.job_id) if services.escrow_enabled() else None
    held = release.view(job, release.storage_expiry(job)) if job.release else None
    return sign(receipt(job, services.provider_address(), payment, held), services.settings().provider_private_key())


def _job(job_id: str) -> JobRecord:
    try:
        return JobRecord.get(job_id, consistent_read=True)
    except DoesNotExist:
        raise NotFound("Job not found") from None
    except PynamoDBException as error:
        raise ServiceUnavailable("Job store is unavailable, try again later") from error


def receipt(call: Call) -> dict[str, Any]:
    """For the job's owner, its viewers and the publisher of any of its inputs; anyone else is
    told the job does not exist, as every job route tells another owner."""
    from chalicelib.receipts.document import ended

    job = _job(call.params.jobId)
    if not may_read_receipt(job, call.caller):
        raise NotFound("Job not found")
    if not ended(job):
        raise BusinessError(NOT_ENDED)
    return signed_receipt(job)


def _owned(caller: str, did: str) -> str:
    """The caller, if it owns the dataset's data NFT now (read from the chain): 401 otherwise."""
    owner = services.asset_resolver().current_owner(did)
    if owner.lower() != caller.lower():
        raise Unauthorized(NOT_OWNER)
    return caller


def audit(call: Call) -> Response:
    """The caller's audit log of the dataset: newest first, one page (chalicelib.owner.audit)."""
    did = call.params.documentId
    publisher = _owned(call.caller, did)
    jobs, more = AuditLog().page(publisher, did, call.params.cursor())
    items, more = bounded([audit_item(job, did, signed_receipt(job) if st.is_terminal(int(job.status)) else None)
                           for job in jobs], jobs, more)
    return json_response(items, headers={NEXT_HEADER: more.encode()} if more else None)


def _reviewed(call: Call) -> JobRecord:
    """A job of the caller's audit log of the dataset (the caller owning its NFT now, and then)."""
    did = call.params.documentId
    publisher = _owned(call.caller, did)
    job = _job(call.params.jobId)
    if input_publishers(job).get(did) != publisher.lower():
        raise NotFound("Job not found")  # not in this publisher's log of the dataset
    return job


def audit_result(call: Call) -> Response:
    """302 to an output or log of a job in the caller's audit log, whatever its release (the
    review): outputs refused since are gone."""
    job = _reviewed(call)
    results = job.results or []
    match = [item for position, item in enumerate(results) if int(item.get("index", position)) == call.params.index_value]
    if not match:
        raise ValidationError.field("index", f"no result with index {call.params.index_value}; this job has {len(results)}")
    item = match[0]
    if item.get("type", "output") == "output" and (job.release or {}).get("outputsDeleted"):
        raise BusinessError(release.WERE_REFUSED)
    if int(job.status) == st.DELETED:
        raise BusinessError("Job was deleted; its results are gone.")
    url = services.job_service().objects.presigned_download(item["key"], item.get("filename", "result"), item.get("versionId"))
    return Response(body="", status_code=302, headers={"Location": url, "Cache-Control": "no-store"})


def decide(call: Call) -> list[dict[str, Any]]:
    """The caller's release or refusal of a job's results held for its dataset; the job's status."""
    from chalicelib.compute.job_status import status_object

    job = _reviewed(call)
    decisions = release.ReleaseDecisions(lambda job_id: services.job_service().objects.delete_job(job_id, "outputs/"))
    decided = decisions.decide(job, call.params.documentId, call.caller, call.params.decision, release.storage_expiry(job))
    decided.refresh(consistent_read=True)
    return [status_object(decided, None)]
