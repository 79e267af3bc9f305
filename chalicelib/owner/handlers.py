"""What the data owner's routes do with a validated call, at `/` and `/node` alike (app.py maps
both protocols' routes here): a job's signed receipt."""
from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib import services
from chalicelib.errors import BusinessError, NotFound, ServiceUnavailable
from chalicelib.http import Call
from chalicelib.models import JobRecord
from chalicelib.owner.access import may_read_receipt

NOT_ENDED = "The job has not ended yet; its receipt is made when it does"


def signed_receipt(job: JobRecord) -> dict[str, Any]:
    """The job's receipt signed by the provider key (chalicelib.receipts)."""
    from chalicelib.receipts.document import receipt
    from chalicelib.receipts.signing import sign

    payment = services.payments().view(job.job_id) if services.escrow_enabled() else None
    return sign(receipt(job, services.provider_address(), payment), services.settings().provider_private_key())


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
