"""Where, as whom and for how long a job runs on Batch: its queue, the algorithm's UID and its
time limits.

A job whose datasets all allow network access (C8) gets the network only on an environment with
a `networkJobQueue`, whose instances run no sealed job (host networking shares one namespace
per instance, see compute.dispatch); it then runs as UID 4001, which the instances' network rules
let out but keep from the metadata and credential endpoints. Every other job runs sealed as UID
4000 on the environment's `jobQueue`. The algorithm's time is what the consumer asked for, never
above maxJobDuration; Batch's attempt timeout adds the margin configure and publish need.
"""
from __future__ import annotations

from chalicelib.compute.environments import Environment

SEALED_UID, NETWORK_UID = 4000, 4001  # C1; infra/network_rules.py holds the rules for both
# Added to the algorithm's time for Batch's attempt timeout, and configure's allowance before the
# algorithm in compute.deadlines. Batch's clock starts at RUNNING, which an ecsProperties job
# reaches only when publish starts (a task's known status is the lowest of its containers'):
# that timeout bounds publish's uploads, never the algorithm.
STAGE_MARGIN_SECONDS = 1800
MIN_ATTEMPT_SECONDS = 60  # Batch refuses shorter timeouts
NETWORK_NOT_GRANTED = ("network access was not granted on this environment: every dataset allows it, but this "
                       "environment runs no network-allowed jobs, so the algorithm runs without network")


def attempt_seconds(environment: Environment, requested: int | None) -> int:
    """The algorithm's time: what the consumer asked for, never above maxJobDuration."""
    limit = max(MIN_ATTEMPT_SECONDS, int(environment.max_job_duration))
    if requested is None or requested <= 0:
        return limit
    return max(MIN_ATTEMPT_SECONDS, min(int(requested), limit))


def batch_timeout_seconds(algorithm_seconds: int) -> int:
    """Batch's attempt timeout: the algorithm's time plus the margin for configure and publish, so
    Batch stops a job only when a runner stage hangs, never before publish had its turn."""
    return int(algorithm_seconds) + STAGE_MARGIN_SECONDS


def algorithm_uid(allow_network: bool) -> int:
    return NETWORK_UID if allow_network else SEALED_UID


def network_granted(environment: Environment, allow_network: bool) -> bool:
    """Whether a job that the datasets allow the network (`allow_network`, C8) gets it on Batch:
    only on an environment with a network queue, whose instances run no sealed job."""
    return allow_network and environment.offers_network


def job_queue(environment: Environment, allow_network: bool) -> str:
    """The queue of a job: the network queue for a network-allowed job, else the sealed one."""
    return environment.network_job_queue if network_granted(environment, allow_network) else environment.job_queue
