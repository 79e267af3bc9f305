"""The algorithm's log so far, for computeStreamableLogs.

Where it is, in order:
- locally (`make run`), the local dispatcher's `algorithm_log(job_id)` (the job folder's
  algorithm.log as it grows);
- on AWS, the algorithm container's CloudWatch stream (awslogs driver, group ALGORITHM_LOG_GROUP)
  as soon as the task exists (10 on): a multi-container job stays STARTING until publish starts,
  so the algorithm runs while the job is at 10..30 (issue 18, point 5). The stream is
  `c2d/algorithm/<ECS task id>` (awslogs-stream-prefix/container name/task id): the record's
  `logStream`, noted from the task ARN of Batch's STARTING or RUNNING event
  (compute.event_signals.algorithm_stream), else from DescribeJobs (the container's
  logStreamName, else its task's ARN);
- once the job published it, the `algorithmLog` result in S3 at the version publish wrote (so a
  finished job's log stays readable after CloudWatch's retention or a local restart).

API Gateway cannot stream a response: what exists when the call arrives is returned, at most
MAX_LOG_BYTES (the head of the log; poll again for more). Nothing here names a host or path.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.compute import status as st
from chalicelib.compute.event_signals import algorithm_stream
from chalicelib.errors import ServiceUnavailable
from chalicelib.models import JobRecord

log = logging.getLogger(__name__)

MAX_LOG_BYTES = 1024 * 1024
# GetLogEvents answers at most 10,000 events a page: an algorithm printing one-byte lines would
# otherwise cost ~50 calls of the account's GetLogEvents quota per poll, and the request's time.
MAX_LOG_PAGES = 5
UNAVAILABLE = "The job's log is unavailable, try again later"


class AlgorithmLogs:
    """Reads a job's algorithm log; clients are built on first use (`batch`, `logs`, `s3` are factories)."""

    def __init__(self, dispatcher: Any, batch: Callable[[], Any], logs: Callable[[], Any], s3: Callable[[], Any],
                 bucket: str, log_group: str, max_bytes: int = MAX_LOG_BYTES, cloudwatch: bool = True,
                 max_pages: int = MAX_LOG_PAGES):
        self._dispatcher = dispatcher
        self._batch = batch
        self._logs = logs
        self._s3 = s3
        self._bucket = bucket
        self._log_group = log_group
        self._max_bytes = max_bytes
        self._cloudwatch_enabled = cloudwatch
        self._max_pages = max_pages

    def read(self, job: JobRecord) -> Optional[bytes]:
        """The log so far, or None while none exists."""
        published = self._published(job)
        if published is not None:
            return published
        local = getattr(self._dispatcher, "algorithm_log", None)
        if callable(local):
            found = local(job.job_id)
            return None if found is None else bytes(found[: self._max_bytes])
        if job.batch_job_id and self._cloudwatch_enabled and st.rank(int(job.status)) >= st.rank(st.STARTED):
            return self._cloudwatch(job)  # before Batch places the task there is no stream
        return None

    # -- CloudWatch Logs (AWS) ------------------------------------------------------------

    def _cloudwatch(self, job: JobRecord) -> Optional[bytes]:
        stream = job.log_stream or self._stream_name(str(job.batch_job_id))
        if not stream:
            return None
        chunks: list[bytes] = []
        size = 0
        token: Optional[str] = None
        try:
            for _ in range(self._max_pages):
                if size >= self._max_bytes:
                    break
                params: dict[str, Any] = {"logGroupName": self._log_group, "logStreamName": stream, "startFromHead": True}
                if token:
                    params["nextToken"] = token
                page = self._logs().get_log_events(**params)
                for event in page.get("events", []):
                    line = (str(event.get("message", "")) + "\n").encode("utf-8", "replace")
                    chunks.append(line)
                    size += len(line)
                if not page.get("events") or page.get("nextForwardToken") in (None, token):
                    break
                token = page["nextForwardToken"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None  # the container has not logged yet
            raise ServiceUnavailable(UNAVAILABLE) from error
        except BotoCoreError as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        return b"".join(chunks)[: self._max_bytes] if chunks else None

    def _stream_name(self, batch_job_id: str) -> Optional[str]:
        try:
            jobs = self._batch().describe_jobs(jobs=[batch_job_id]).get("jobs", [])
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        if not jobs:
            return None
        detail = jobs[0]
        stream = algorithm_stream(detail) or (detail.get("container") or {}).get("logStreamName")
        return str(stream) if stream else None

    # -- the published result (S3) --------------------------------------------------------

    def _published(self, job: JobRecord) -> Optional[bytes]:
        entry = next((item for item in job.results or [] if item.get("type") == "algorithmLog" and item.get("key")), None)
        if entry is None:
            return None
        try:
            pinned = {"VersionId": entry["versionId"]} if entry.get("versionId") else {}  # the version publish wrote
            body = self._s3().get_object(Bucket=self._bucket, Key=entry["key"], Range=f"bytes=0-{self._max_bytes - 1}",
                                         **pinned)
            return body["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "InvalidRange"):
                return b"" if error.response["Error"]["Code"] == "InvalidRange" else None
            raise ServiceUnavailable(UNAVAILABLE) from error
        except BotoCoreError as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
