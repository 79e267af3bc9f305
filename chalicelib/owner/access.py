"""Who may read what of a job beyond its owner (issue 22).

- A job's receipt: its owner, its viewers, and the publisher of any of its inputs (the owner of
  the input's data NFT when the job started, as its `provenance` recorded: the one whose data
  and whose rules were used).
- A dataset's audit log and its jobs' outputs and logs under review: the dataset's data NFT
  owner now, read from the chain at each call (chalicelib.owner.audit).
"""
from __future__ import annotations

from collections.abc import Mapping

from chalicelib.models import JobRecord


def input_publishers(job: JobRecord) -> dict[str, str]:
    """{did: the owner (lower case) of its data NFT when the job started} of each input."""
    made = job.provenance if isinstance(job.provenance, Mapping) else {}
    return {str(item["did"]): str(item["publisher"]).lower() for item in made.get("inputs", [])
            if isinstance(item, Mapping) and item.get("did") and item.get("publisher")}


def may_read_receipt(job: JobRecord, caller: str) -> bool:
    who = caller.lower()
    return (who == job.owner.lower() or who in {viewer.lower() for viewer in job.viewers or []}
            or who in input_publishers(job).values())
