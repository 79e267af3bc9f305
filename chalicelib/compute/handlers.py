"""What each compute route does with a validated call; app.py maps the routes here."""
from __future__ import annotations

from typing import Any

from chalice import Response

from chalicelib import services
from chalicelib import budget
from chalicelib.compute.environments import environments, listing
from chalicelib.compute.job_status import status_object
from chalicelib.compute.paging import NEXT_HEADER, Cursor
from chalicelib.errors import NotFound, ValidationError
from chalicelib.http import Call, json_response


def compute_environments(call: Call) -> dict[str, Any]:
    configured = environments()
    only = call.params.chainId
    current = services.settings()
    if only is not None and only not in current.chain_ids:
        raise ValidationError.field("chainId", f"chain {only} is not served by this provider")
    running = services.usage_counter().current(configured.keys())
    return listing(configured, current.chain_ids, services.provider_address(), running, only)


@budget.with_deadline
def initialize(call: Call, deadline: budget.Deadline) -> dict[str, Any]:
    """Chain calls within the request's deadline (chalicelib.budget)."""
    return services.compute_workflow().initialize(call.params)


@budget.with_deadline
def start(call: Call, deadline: budget.Deadline) -> list[dict[str, Any]]:
    """Chain calls stay within the request's deadline and nothing is reserved without the time
    to finish."""
    environment = environments().get(call.params.environment)
    if environment is not None:  # an unknown one is the validator's to refuse, with its code
        services.access_lists().require(environment.access, call.caller, f"compute environment {environment.id}")
    return [status_object(services.compute_workflow().start(call.params, call.caller, deadline), None)]


def status(call: Call) -> Response:
    """Signed (or AuthToken): the caller's jobs; unsigned: the reduced view. Newest first, one
    page (compute.paging); download URLs only when one job is asked for, signed: a listing
    presigning two URLs per job would spend its time on URLs nobody follows."""
    params = call.params
    signed = call.caller is not None  # the caller proved who it is (http: its nonce spent first)
    owner = call.caller or services.checksum(params.consumerAddress)
    jobs = services.job_service()
    # a job asked for by its id is found for its additionalViewers too (compute.job_options)
    page = jobs.find(owner, params.jobId, params.documentId, params.cursor(), for_status=True, viewer=True)
    if params.jobId and not page.jobs:
        raise NotFound("Job not found")
    return _page_response(*jobs.status_objects(page, with_urls=signed and bool(params.jobId)))


def stop(call: Call) -> Response:
    owner = call.caller
    jobs = services.job_service()
    page = jobs.stop(owner, call.params.jobId, call.params.documentId, call.params.cursor())
    return _page_response(*jobs.status_objects(page, with_urls=False))


def delete(call: Call) -> Response:
    owner = call.caller
    jobs = services.job_service()
    page = jobs.delete(owner, call.params.jobId, call.params.documentId, call.params.cursor())
    return _page_response(*jobs.status_objects(page, with_urls=False))


def _page_response(body: list[dict[str, Any]], more: Cursor | None) -> Response:
    """The v4 answer is a bare list, so where it continues goes in a header (see compute.paging)."""
    return json_response(body, headers={NEXT_HEADER: more.encode()} if more else None)


def result(call: Call) -> Response:
    """302 to a presigned S3 URL: Lambda cannot return more than 6 MB, so results never pass through it."""
    url = services.job_service().result_url(call.caller, call.params.jobId, call.params.index_value)
    return Response(body="", status_code=302, headers={"Location": url, "Cache-Control": "no-store"})
