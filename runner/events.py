"""Stage events (docs/internals.md, "Runner stage events"): EventBridge in AWS, stdout locally.

An undelivered event leaves the job record behind, so EventBridge failures are retried and then
logged loudly, but never raised: the stage's own work (and its exit code) must not depend on it.

Every event carries `at` (this stage's clock, epoch seconds: configure's 30 says when the
algorithm may start, publish's 60 when it had ended) and, signed with the job's key
(chalicelib.job_key), `signature`: the provider refuses a job's event without it, so neither
the algorithm nor another job can speak for this job's stages.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Callable, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.job_key import SIGNATURE_FIELD, sign_detail

from .aws import events_client
from .settings import Settings

SOURCE = "ocean.c2d.runner"
DETAIL_TYPE = "Compute Job Stage Change"
STDOUT_PREFIX = "C2D-EVENT "
# EventBridge rejects entries over 256 KB (source + detail-type + detail); stay well below.
MAX_DETAIL_BYTES = 200_000

log = logging.getLogger(__name__)


def detail_size(detail: dict[str, Any]) -> int:
    """Encoded size of a detail, as EventBridge counts it."""
    return len(json.dumps(detail, separators=(",", ":")).encode("utf-8"))


class Emitter:
    """Builds the detail {jobId, status, at, reason?, attempt?, ...extra, signature?} and hands it
    to a transport.

    `attempt` is AWS Batch's attempt number, so the provider can ignore a retried job's stale
    events; it is left out when unknown (locally). `key`, the job's key, signs the detail."""

    def __init__(self, job_id: str, attempt: int | None = None, key: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._key = key
        self._clock = clock

    def emit(self, status: int, reason: str = "", **extra: Any) -> bool:
        """Report a stage status; returns whether the event was delivered."""
        detail: dict[str, Any] = {"jobId": self.job_id, "status": status, "at": int(self._clock())}
        if reason:
            detail["reason"] = reason
        if self.attempt is not None:
            detail["attempt"] = self.attempt
        detail.update(extra)
        if self._key:
            detail[SIGNATURE_FIELD] = sign_detail(self._key, detail)
        log.info("status %d%s", status, f": {reason}" if reason else "")
        return self._send(detail)

    def _send(self, detail: dict[str, Any]) -> bool:
        raise NotImplementedError


class StdoutEmitter(Emitter):
    """One `C2D-EVENT {detail}` line per event, read by the local dispatcher."""

    def __init__(self, job_id: str, stream: TextIO | None = None,
                 attempt: int | None = None, key: str = "", clock: Callable[[], float] = time.time) -> None:
        super().__init__(job_id, attempt, key, clock)
        self._stream = stream

    def _send(self, detail: dict[str, Any]) -> bool:
        stream = self._stream or sys.stdout
        stream.write(STDOUT_PREFIX + json.dumps(detail, separators=(",", ":")) + "\n")
        stream.flush()
        return True


class EventBridgeEmitter(Emitter):
    """PutEvents to EVENT_BUS_NAME with a few retries (throttling, transient failures)."""

    def __init__(self, job_id: str, bus: str, client_factory: Callable[[], Any],
                 attempts: int = 4, sleep: Callable[[float], None] = time.sleep,
                 attempt: int | None = None, key: str = "", clock: Callable[[], float] = time.time) -> None:
        super().__init__(job_id, attempt, key, clock)
        self._bus = bus
        self._client_factory = client_factory
        self._client: Any = None
        self._attempts = attempts
        self._sleep = sleep

    def _send(self, detail: dict[str, Any]) -> bool:
        entry = {"Source": SOURCE, "DetailType": DETAIL_TYPE, "EventBusName": self._bus,
                 "Detail": json.dumps(detail, separators=(",", ":"))}
        problem = "unknown"
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(0.5 * 2 ** (attempt - 1))
            try:
                if self._client is None:
                    self._client = self._client_factory()
                response = self._client.put_events(Entries=[entry])
            except ClientError as exc:
                problem = exc.response.get("Error", {}).get("Code", "ClientError")
            except BotoCoreError as exc:
                problem = type(exc).__name__
            else:
                if not response.get("FailedEntryCount"):
                    return True
                problem = (response.get("Entries") or [{}])[0].get("ErrorCode") or "failed entry"
            log.warning("PutEvents for status %s failed (attempt %d): %s",
                        detail["status"], attempt + 1, problem)
        log.error("status %s event NOT delivered after %d attempts: %s",
                  detail["status"], self._attempts, problem)
        return False


def make_emitter(settings: Settings) -> Emitter:
    """The transport chosen by RUNNER_EVENTS."""
    if settings.events_mode == "stdout":
        return StdoutEmitter(settings.job_id, attempt=settings.attempt, key=settings.job_key)
    region = settings.region
    return EventBridgeEmitter(settings.job_id, settings.event_bus, lambda: events_client(region),
                              attempt=settings.attempt, key=settings.job_key)
