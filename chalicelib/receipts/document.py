"""The receipt of a job: what the provider records of it, built from its record alone (the
start's `provenance`, the times its runner's signed events and Batch gave, its results as
publish reported them) and its escrow payment, if any. Deterministic: the same state of a job
gives the same bytes, so two fetches of one receipt carry one signature; a later change (a
release decision, a claim mined) is a new receipt with the state it describes.

docs/receipts.md describes every field; `version` changes when one changes meaning.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from chalicelib.compute import status as st
from chalicelib.models import JobRecord

VERSION = 1


def _seconds(value: Any) -> Optional[int]:
    return None if value in (None, "") else int(float(value))


def _span(started: Any, ended: Any) -> dict[str, Optional[int]]:
    return {"startedAt": _seconds(started), "endedAt": _seconds(ended)}


def times(job: JobRecord) -> dict[str, Any]:
    """When the job was made and ended, and when each stage started and ended, from what the
    image cannot touch (issue 18): Batch's STARTING (configure starts), configure's signed 30
    (the algorithm may start), the algorithm container's own StartedAt/FinishedAt as the ECS
    agent recorded them (publish reports them signed; else configure's 30 to publish's 60),
    publish's signed 60, and the job's end."""
    run = job.algorithm_run if isinstance(job.algorithm_run, Mapping) else {}
    algorithm_start = run.get("startedAt") or job.algorithm_started_at
    algorithm_end = run.get("finishedAt") or job.publish_started_at
    return {
        "created": _seconds(job.date_created),
        "finished": _seconds(job.date_finished),
        "configure": _span(job.starting_at, job.algorithm_started_at),
        "algorithm": _span(algorithm_start, algorithm_end),
        "publish": _span(job.publish_started_at, job.date_finished if job.publish_started_at else None),
    }


def billing(job: JobRecord, payment: Optional[Mapping[str, Any]], fee: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """What the job was paid with: Ocean Node's escrow (the lock, what was claimed of it and
    the claim's or cancel's transaction), else the provider fee its orders paid (v4), else free."""
    if payment:
        def tx(kind: str) -> Optional[str]:
            found = payment.get(kind)
            return found.get("hash") if isinstance(found, Mapping) else None

        return {"kind": "escrow", "chainId": payment.get("chainId"), "token": payment.get("token"),
                "locked": str(payment.get("amount")), "claimed": str(payment.get("claimed") or "0"),
                "billedSeconds": _seconds(payment.get("billedSeconds")), "status": payment.get("status"),
                "transactions": {"lock": tx("lock"), "claim": tx("claim"), "cancel": tx("cancel")}}
    if fee:
        return {"kind": "providerFee", "chainId": fee.get("chainId"), "token": fee.get("token"),
                "amount": str(fee.get("amount")), "transactions": {"order": fee.get("order")}}
    return {"kind": "free"}


def receipt(job: JobRecord, provider: str, payment: Optional[Mapping[str, Any]] = None,
            held: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The unsigned receipt of `job`, issued by `provider` (its checksummed address). `held`:
    where its release stands now (chalicelib.owner.release.view: the state, expired included,
    and when the request expires)."""
    made = job.provenance if isinstance(job.provenance, Mapping) else {}
    algorithm = made.get("algorithm") or {"did": job.algo_did or None, "files": []}
    results = [item for item in (job.results or []) if isinstance(item, Mapping)]
    details = job.termination_details.as_dict() if job.termination_details else {}
    release = job.release if isinstance(job.release, Mapping) else None
    return {
        "version": VERSION,
        "provider": provider,
        "chainId": int(job.chain_id),
        "jobId": job.job_id,
        "owner": job.owner,
        "datasets": [{"did": item.get("did"), "serviceId": item.get("serviceId"), "order": item.get("order")}
                     for item in made.get("inputs", [])] or [{"did": did, "serviceId": None, "order": None}
                                                              for did in (job.input_dids or [])],
        "algorithm": {"did": algorithm.get("did"), "serviceId": algorithm.get("serviceId"),
                      "order": algorithm.get("order"), "rawcodeSha256": algorithm.get("rawcodeSha256"),
                      "files": [{"index": position, "sha256": digest}
                                for position, digest in enumerate(algorithm.get("files") or [])]},
        "image": made.get("image"),
        "environment": {"id": job.environment, "resources": made.get("resources"),
                        "maxSeconds": _seconds(job.max_seconds)},
        "times": times(job),
        "status": int(job.status),
        "statusText": job.status_text,
        "exitCode": details.get("exitCode"),
        "reason": details.get("reason") or None,
        "billing": billing(job, payment, made.get("fee")),
        "outputs": [{"name": item.get("filename"), "size": int(item.get("filesize", 0)), "sha256": item.get("sha256"),
                     "deleted": bool(release and release.get("outputsDeleted"))}
                    for item in results if item.get("type", "output") == "output"],
        "outputsTruncated": bool(job.results_truncated),
        "logs": [{"name": item.get("filename"), "type": item.get("type"), "size": int(item.get("filesize", 0)),
                  "sha256": item.get("sha256")} for item in results if item.get("type", "output") != "output"],
        "release": release_view(release, held),
    }


def release_view(release: Optional[Mapping[str, Any]], held: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The data owners' release of the results (chalicelib.owner.release): not required, or
    where it stands (`held`, else as recorded), when an unanswered request expires, whether the
    outputs were deleted, and each dataset's decision."""
    if not release:
        return {"required": False}
    now = held or {}
    return {"required": True, "state": now.get("state", release.get("state")), "expiresAt": now.get("expiresAt"),
            "outputsDeleted": bool(release.get("outputsDeleted")),
            "decisions": [{"did": did, **dict(decision)} for did, decision in sorted((release.get("decisions") or {}).items())]}


def ended(job: JobRecord) -> bool:
    """Whether a job has a receipt: it reached a terminal state (awaiting release included)."""
    return st.is_terminal(int(job.status))
