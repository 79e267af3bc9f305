"""A crash at every step (issue 20): the process dies before or after each external call a flow
makes, then the reconciler and the consumer's retry run, and invariants are checked.

- `ExternalCalls` sees every external call while armed: every AWS API call (botocore's
  `_make_api_call`: DynamoDB through PynamoDB, S3, Batch) and the chain's sends and receipt
  reads (`eth_sendRawTransaction`, `eth_getTransactionReceipt`, at web3's HTTP provider). A dry
  run lists the calls a flow makes; then the flow runs again from the same state once per crash
  point, raising `Crash` (a BaseException: no `except Exception` of ours sees it, as when the
  Lambda dies) right before or right after call i. A new call in the code is a new crash point:
  nothing lists them by hand.
- Crash points that leave the same external state are one run: "after call i" and "before call
  i+1" have nothing external between them (`crash_classes`), so a flow of N calls has 2N crash
  points and N+1 distinct states, each run. The run checks that the call it crashes at is the
  dry run's (the flow is deterministic from the same state).
- `StateSnapshot` puts moto's tables and bucket, anvil and the fake Batch back between runs.
- `FakeBatch` answers a real boto3 Batch client (its parameters are validated against AWS's model
  by botocore before the call): definitions, SubmitJob, ListJobs by name, DescribeJobs (as the
  Batch events would show the job), TerminateJob. moto cannot hold ecsProperties definitions
  (DESIGN §6) and botocore's Stubber needs every call in advance, which a crash reorders.
"""
from __future__ import annotations

import copy
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from botocore.awsrequest import AWSResponse

CHAIN_CALLS = {"eth_sendRawTransaction", "eth_getTransactionReceipt"}
ACCOUNT = "123456789012"


class Crash(BaseException):
    """The process dies here: a Lambda killed between two calls."""


@dataclass(frozen=True)
class ExternalCall:
    service: str  # dynamodb, s3, batch, chain
    operation: str

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass
class ExternalCalls:
    """Lists the external calls made while armed, and crashes at one of them."""

    calls: list[ExternalCall] = field(default_factory=list)
    crash_at: tuple[int, str] | None = None  # (call index, "before" | "after")
    crashed: ExternalCall | None = None

    @contextmanager
    def watching(self, crash_at: tuple[int, str] | None = None) -> Iterator["ExternalCalls"]:
        from botocore.client import BaseClient
        from web3.providers.rpc import HTTPProvider

        self.calls, self.crash_at, self.crashed = [], crash_at, None
        aws_call, rpc_call = BaseClient._make_api_call, HTTPProvider._make_request
        calls = self

        def aws(client: Any, operation: str, params: Any) -> Any:
            service = client.meta.service_model.service_name
            return calls._around(ExternalCall(service, operation), lambda: aws_call(client, operation, params))

        def rpc(provider: Any, method: str, data: bytes) -> Any:
            if method not in CHAIN_CALLS:
                return rpc_call(provider, method, data)
            return calls._around(ExternalCall("chain", method), lambda: rpc_call(provider, method, data))

        BaseClient._make_api_call, HTTPProvider._make_request = aws, rpc
        try:
            yield self
        finally:
            BaseClient._make_api_call, HTTPProvider._make_request = aws_call, rpc_call

    def _around(self, call: ExternalCall, perform: Callable[[], Any]) -> Any:
        index = len(self.calls)
        self.calls.append(call)
        if self.crash_at == (index, "before"):
            self.crashed = call
            raise Crash(f"before {call}")
        try:
            result = perform()
        except BaseException:
            if self.crash_at == (index, "after"):
                self.crashed = call
                raise Crash(f"after {call} (it failed)") from None
            raise
        if self.crash_at == (index, "after"):
            self.crashed = call
            raise Crash(f"after {call}")
        return result


def crash_classes(count: int) -> list[list[tuple[int, str]]]:
    """The 2N crash points of N calls, grouped by the external state they leave: before call 0
    alone, then each "after i" with "before i+1"."""
    classes = [[(0, "before")]] if count else []
    for index in range(count):
        group = [(index, "after")]
        if index + 1 < count:
            group.append((index + 1, "before"))
        classes.append(group)
    return classes


@dataclass
class CrashReport:
    flow: str
    calls: list[str]
    points: int
    runs: int

    def line(self) -> str:
        return f"{self.flow}: {len(self.calls)} external calls, {self.points} crash points, {self.runs} distinct states run"


def run_crash_points(flow: str, act: Callable[[], Any], recover: Callable[[], None], check: Callable[[], None],
                     snapshot: "StateSnapshot", calls: ExternalCalls) -> CrashReport:
    """Dry run (no crash) to list the calls, then one run per distinct crash state: restore the
    state, run `act` crashing there, `recover` (reconciler, retry, the job's end), `check`."""
    snapshot.take()
    with calls.watching():
        act()
    listed = list(calls.calls)
    recover()
    check()
    classes = crash_classes(len(listed))
    for group in classes:
        snapshot.restore()
        index, when = group[0]
        with calls.watching(crash_at=(index, when)):
            try:
                act()
            except Crash:
                pass
        assert calls.crashed == listed[index], (
            f"{flow}: expected to crash {when} {listed[index]} (call {index}), crashed at {calls.crashed}; "
            f"calls now {[str(c) for c in calls.calls]}")
        try:
            recover()
            check()
        except AssertionError as failure:
            raise AssertionError(f"{flow}, crash {when} call {index} ({listed[index]}): {failure}") from None
    return CrashReport(flow, [str(c) for c in listed], 2 * len(listed), len(classes))


# -- state between runs ------------------------------------------------------------------------

class StateSnapshot:
    """moto's tables and results bucket, anvil, and the fake Batch, as they were at `take()`."""

    def __init__(self, chain: Any, batch: "FakeBatch", dispatcher: Any) -> None:
        self._chain = chain
        self._batch = batch
        self._dispatcher = dispatcher
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._keys: dict[str, list[str]] = {}
        self._objects: dict[str, bytes] = {}
        self._chain_snapshot: str | None = None

    def _dynamodb(self) -> Any:
        from chalicelib.models import JobRecord

        return JobRecord._get_connection().connection.client

    def _table_names(self) -> list[str]:
        from chalicelib import models
        from chalicelib.payments import models as payment_models

        return sorted({m.Meta.table_name for m in (*models.ALL_MODELS, *payment_models.PAYMENT_MODELS)})

    def _scan(self, table: str) -> list[dict[str, Any]]:
        items, start = [], None
        while True:
            page = self._dynamodb().scan(TableName=table, **({"ExclusiveStartKey": start} if start else {}))
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def take(self) -> None:
        from chalicelib import aws, services
        from devstack.anvil import snapshot

        self._tables = {table: self._scan(table) for table in self._table_names()}
        s3, bucket = aws.client("s3"), services.settings().bucket
        self._objects = {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                         for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        self._chain_snapshot = snapshot(self._chain.w3)
        self._batch_state = copy.deepcopy(self._batch.state())

    def restore(self) -> None:
        from chalicelib import aws, services
        from devstack.anvil import revert, snapshot

        client = self._dynamodb()
        for table, saved in self._tables.items():
            keys = self._keys.get(table)
            if keys is None:
                keys = self._keys[table] = [key["AttributeName"] for key in
                                            client.describe_table(TableName=table)["Table"]["KeySchema"]]
            for item in self._scan(table):  # only what changed is written back
                if item not in saved:
                    client.delete_item(TableName=table, Key={key: item[key] for key in keys})
                else:
                    saved = [kept for kept in saved if kept != item]
            for item in saved:
                client.put_item(TableName=table, Item=item)
        s3, bucket = aws.client("s3"), services.settings().bucket
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        for key, body in self._objects.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        revert(self._chain.w3, self._chain_snapshot)
        self._chain_snapshot = snapshot(self._chain.w3)
        self._batch.load(copy.deepcopy(self._batch_state))
        self._dispatcher._definitions.clear()


# -- Batch -------------------------------------------------------------------------------------

class FakeBatch:
    """AWS Batch for one real boto3 client: what the provider's calls need, with Batch's answers."""

    def __init__(self) -> None:
        import boto3

        self.client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        self.definitions: dict[str, str] = {}
        self.jobs: dict[str, dict[str, Any]] = {}  # Batch job id -> {name, queue, status, reason}
        # ahead of anything else on before-call (it answers the call: nothing reaches the network)
        self.client.meta.events.register_first("before-call.*.*", self._answer)

    def state(self) -> dict[str, Any]:
        return {"definitions": self.definitions, "jobs": self.jobs}

    def load(self, state: dict[str, Any]) -> None:
        self.definitions, self.jobs = state["definitions"], state["jobs"]

    def _answer(self, event_name: str, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        operation = event_name.rsplit(".", 1)[-1]
        body = json.loads(params.get("body") or b"{}")
        answer = getattr(self, "_" + operation)(body)
        return AWSResponse("https://batch.invalid/", 200, {}, None), {**answer, "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _DescribeJobDefinitions(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("jobDefinitionName")
        arn = self.definitions.get(name)
        return {"jobDefinitions": [{"jobDefinitionName": name, "jobDefinitionArn": arn, "revision": 1, "status": "ACTIVE",
                                    "type": "container"}] if arn else []}

    def _RegisterJobDefinition(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["jobDefinitionName"]
        arn = f"arn:aws:batch:us-east-1:{ACCOUNT}:job-definition/{name}:1"
        self.definitions[name] = arn
        return {"jobDefinitionName": name, "jobDefinitionArn": arn, "revision": 1}

    def _SubmitJob(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_job_id = "b-" + uuid.uuid4().hex[:12]
        self.jobs[batch_job_id] = {"name": body["jobName"], "queue": body["jobQueue"], "status": "RUNNABLE",
                                   "jobId": body["tags"]["c2d:jobId"], "reason": None}
        return {"jobName": body["jobName"], "jobId": batch_job_id,
                "jobArn": f"arn:aws:batch:us-east-1:{ACCOUNT}:job/{batch_job_id}"}

    def _ListJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        names = {value for f in body.get("filters", []) if f["name"] == "JOB_NAME" for value in f["values"]}
        return {"jobSummaryList": [{"jobId": batch_job_id, "jobName": job["name"], "status": job["status"]}
                                   for batch_job_id, job in self.jobs.items()
                                   if job["queue"] == body["jobQueue"] and job["name"] in names]}

    def _DescribeJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"jobs": [self.detail(batch_job_id) for batch_job_id in body["jobs"] if batch_job_id in self.jobs]}

    def _TerminateJob(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(body["jobId"])
        if job is not None and job["status"] not in ("SUCCEEDED", "FAILED"):
            job.update(status="FAILED", reason=body["reason"])
        return {}

    def set(self, batch_job_id: str, status: str) -> None:
        self.jobs[batch_job_id]["status"] = status

    def event(self, batch_job_id: str) -> dict[str, Any]:
        """The job's "Batch Job State Change" event as EventBridge delivers it."""
        from test_events import batch_event

        job = self.jobs[batch_job_id]
        exits = {"configure": 0, "algorithm": 0, "publish": 0} if job["status"] == "SUCCEEDED" else None
        queue = f"arn:aws:batch:us-east-1:{ACCOUNT}:job-queue/{job['queue']}"
        return batch_event(job["jobId"], job["status"], batch_job_id=batch_job_id, queue=queue, exits=exits,
                           reason=job["reason"])

    def detail(self, batch_job_id: str) -> dict[str, Any]:
        """The job as DescribeJobs shows it: its Batch event's detail."""
        return self.event(batch_job_id)["detail"]

    def live(self) -> dict[str, dict[str, Any]]:
        return {i: j for i, j in self.jobs.items() if j["status"] not in ("SUCCEEDED", "FAILED")}
