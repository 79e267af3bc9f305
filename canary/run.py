"""One canary run: start every probe job through the provider's own start path, wait for them,
fetch each one's canary.json through computeResult, and judge (canary/verdict.py).

Paid starts order first and start afterwards, back to back, so the probes of an environment are
RUNNABLE together however slow the chain is: that is what lets Batch place the two sealed ones on
one instance.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from canary.client import Dataset, Provider, Refused, TERMINAL, result_index
from canary.plan import ProbeJob, algorithm_meta, new_run_id, plan_jobs
from canary.target import Target, TargetError
from canary.verdict import SKIP, Outcome, Row, rows_for

RUNNING = 40  # "Running algorithm": from here until it ends, the job has an algorithm log
CHECK_SECONDS = 120  # the probe's own checks besides the peer window (the image scan is bounded at 20 s)
# A paid job's time is its provider fee's validUntil minus its start: the fee also covers the time
# the other probes' orders take to be mined before every job starts (one or two blocks each).
ORDERING_SECONDS = 300


@dataclass
class Settings:
    path: str = "paid"  # "paid" (v4 at /) | "free" (/node freeCompute)
    image: str = "python:3.13-slim"
    window: float = 120.0
    timeout: float = 3600.0
    poll: float = 5.0
    environments: Sequence[str] = ()

    @property
    def job_seconds(self) -> int:
        return int(self.window + CHECK_SECONDS)


def chosen_environments(offered: Sequence[str], wanted: Sequence[str], chain_id: int) -> list[str]:
    unknown = [e for e in wanted if e not in offered]
    if unknown:
        raise TargetError(f"no environment {', '.join(unknown)} on chain {chain_id} (it offers {', '.join(offered)})")
    chosen = [e for e in offered if not wanted or e in wanted]
    if not chosen:
        raise TargetError(f"the provider offers no compute environment on chain {chain_id}")
    return chosen


def dataset_for(target: Target, job: ProbeJob) -> Dataset:
    dataset = target.network if job.mode == "network" else target.sealed
    if dataset is None:
        raise TargetError(f"no canary dataset for {job.mode} probes")
    return dataset


class Starter:
    """Starts probe jobs by one path; paid ones in two phases (order all, then start all)."""

    def __init__(self, target: Target, provider: Provider, settings: Settings, order: Callable | None):
        self.target, self.provider, self.settings, self.order = target, provider, settings, order
        self.meta = algorithm_meta(settings.image, local=target.where == "local")

    def start_all(self, jobs: Sequence[ProbeJob]) -> list[Outcome]:
        outcomes = [Outcome(job) for job in jobs]
        if self.settings.path == "free":
            for outcome in outcomes:
                self._guard(outcome, lambda o=outcome: self.provider.start_free(
                    o.job.environment, dataset_for(self.target, o.job), self.meta, o.job.algocustomdata(),
                    self.settings.job_seconds))
            return outcomes
        quotes: dict[int, tuple[Dataset, str]] = {}
        for number, outcome in enumerate(outcomes):
            def ordered(o: Outcome = outcome, n: int = number) -> str:
                dataset = dataset_for(self.target, o.job)
                quotes[n] = (dataset, self.provider.quote_and_order(
                    o.job.environment, dataset, self.meta, self.order, self.settings.job_seconds + ORDERING_SECONDS))
                return ""
            self._guard(outcome, ordered, keep_id=False)
        for number, outcome in enumerate(outcomes):
            if number in quotes:
                dataset, transfer = quotes[number]
                self._guard(outcome, lambda o=outcome, d=dataset, t=transfer: self.provider.start_ordered(
                    o.job.environment, d, self.meta, o.job.algocustomdata(), t))
        return outcomes

    @staticmethod
    def _guard(outcome: Outcome, action: Callable[[], str], keep_id: bool = True) -> None:
        try:
            job_id = action()
        except (Refused, TargetError, RuntimeError, ValueError, KeyError) as error:
            outcome.problem = f"not started: {error}"
            return
        if keep_id:
            outcome.job_id = job_id


def wait_all(provider: Provider, settings: Settings, outcomes: Sequence[Outcome], say: Callable[[str], None]) -> None:
    """Poll every started job until it ends or the timeout passes."""
    status = provider.status_node if settings.path == "free" else provider.status_v4
    deadline = time.monotonic() + settings.timeout
    waiting = [o for o in outcomes if o.job_id and not o.problem]
    while waiting:
        for outcome in list(waiting):
            try:
                current = status(outcome.job_id)
            except Refused as error:
                say(f"  {outcome.job.environment} {outcome.job.label}: status failed: {error}")
                continue
            if (outcome.status or {}).get("status") != current.get("status"):
                say(f"  {outcome.job.environment} {outcome.job.label} {outcome.job_id}: "
                    f"{current.get('status')} {current.get('statusText')}")
            outcome.status = current
            code = int(current.get("status", 0))
            if code in TERMINAL:
                waiting.remove(outcome)
            elif code >= RUNNING and not outcome.log_seen:
                watch_log(provider, outcome, code)
        if waiting and time.monotonic() > deadline:
            for outcome in waiting:
                outcome.problem = f"did not end within {settings.timeout:.0f} s (last status {outcome.status})"
            return
        if waiting:
            time.sleep(settings.poll)


def watch_log(provider: Provider, outcome: Outcome, code: int) -> None:
    """Ask for the algorithm's log while the job runs: the probe's first line must show."""
    outcome.log_polls += 1
    try:
        text = provider.logs_node(outcome.job_id) or ""
    except Refused:
        return
    if f"c2d-canary probe {outcome.job.role} started" in text:
        outcome.log_seen = f"status {code}"


def fetch_results(provider: Provider, settings: Settings, outcomes: Sequence[Outcome]) -> None:
    """Each ended job's canary.json, through computeResult as a consumer downloads a result."""
    result = provider.result_node if settings.path == "free" else provider.result_v4
    for outcome in outcomes:
        if outcome.problem or not outcome.status:
            continue
        index = result_index(outcome.status)
        if index is None:
            details = outcome.status.get("terminationDetails") or ""
            outcome.problem = (f"ended {outcome.status.get('status')} {outcome.status.get('statusText')} without "
                               f"canary.json {details}").strip()
            continue
        try:
            outcome.result = json.loads(result(outcome.job_id, index))
        except (Refused, ValueError, OSError) as error:
            outcome.problem = f"canary.json could not be fetched: {error}"
            continue
        if outcome.status.get("status") != 70:
            outcome.problem = f"ended {outcome.status.get('status')} {outcome.status.get('statusText')}"


def run(target: Target, settings: Settings, say: Callable[[str], None] = print,
        order: Callable | None = None, decoys: Any = None) -> list[Row]:
    """Start, wait, fetch, judge; returns the table's rows."""
    provider = Provider(target.provider_url, target.key, target.chain_id)
    starter = Starter(target, provider, settings, order)
    gpus = provider.environments()
    environments = chosen_environments(list(gpus), settings.environments, target.chain_id)
    run_id = new_run_id()
    planted = decoys.start(run_id) if decoys is not None else None
    networked = [(e, target.has_network_queue(e) and target.network is not None) for e in environments]
    jobs = plan_jobs(networked, where=target.where, run=run_id, window=settings.window, decoys=planted, gpus=gpus)
    say(f"canary run {run_id}: {len(jobs)} probe jobs on {', '.join(environments)} at {target.provider_url} "
        f"({settings.path} start path, image {settings.image}, as {provider.address})")
    outcomes = starter.start_all(jobs)
    for outcome in outcomes:
        say(f"  {outcome.job.environment} {outcome.job.label}: " + (outcome.job_id or outcome.problem))
    wait_all(provider, settings, outcomes, say)
    fetch_results(provider, settings, outcomes)
    rows = rows_for(outcomes)
    for environment, networked_here in networked:
        if not networked_here:
            why = ("local jobs allowed the network share the host's network (README, Local mode), so none is probed"
                   if target.where == "local" else "the environment has no networkJobQueue, or no network canary dataset")
            rows.append(Row(environment, "network", "jobs.network_mode", SKIP, f"no network-allowed probe: {why}"))
    if decoys is not None:
        rows.append(decoys.stop())
    return rows
