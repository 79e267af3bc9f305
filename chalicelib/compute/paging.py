"""Pages of a caller's jobs: newest first, at most PAGE_JOBS jobs and MAX_ANSWER_BYTES of JSON.

A listing answers one page; the `Next-Page` response header carries a cursor to the older jobs,
which the caller passes back as the `next` parameter (ocean.py and ocean.js ignore both and get
the newest page). The cursor is the last job shown, (dateCreated, jobId), as base64url JSON: it
is validated rather than signed, because the query's partition key is always the authenticated
(or named) caller, so a forged cursor can only move within the caller's own jobs.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import ValidationError

PAGE_JOBS = 50
MAX_ANSWER_BYTES = 1_000_000
NEXT_HEADER = "Next-Page"
MAX_CURSOR_CHARS = 200
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_DATE = 10**12


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the listing continues with jobs older than this one."""

    date_created: int
    job_id: str

    def encode(self) -> str:
        raw = json.dumps([self.date_created, self.job_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """The cursor a `Next-Page` header gave; a 400 on `next` for anything else."""
        try:
            if len(text) > MAX_CURSOR_CHARS or not text.isascii():
                raise ValueError
            value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            date_created, job_id = value
            if (not isinstance(date_created, int) or isinstance(date_created, bool) or not 0 <= date_created < _MAX_DATE
                    or not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id)):
                raise ValueError
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValidationError.field("next", "not a cursor this provider gave (the Next-Page header)") from None
        return cls(date_created, job_id)

    def start_key(self, hash_attribute: str, hash_value: str) -> dict[str, Any]:
        """DynamoDB's ExclusiveStartKey of an index query: the table key and the index's keys."""
        return {"jobId": {"S": self.job_id}, hash_attribute: {"S": hash_value},
                "dateCreated": {"N": str(self.date_created)}}
