"""What the reconciler measures on each run, for the alarms (infra/resources.yaml):

- ReconcilerRuns (1 per run: the "reconciler not running" alarm breaches when none arrives),
  ReconcilerErrors, and ReconcilerRepairs by kind (starts abandoned, lost events applied,
  escrow payments healed or settled);
- JobsPastDeadline per environment: jobs not ended DEADLINE_MARGIN after the latest they could
  (created + the environment's maxJobDuration + the runner's stages), from the index of active
  jobs (one query per environment, bounded by its maxJobs);
- ProviderGasBalance per chain (native unit) of every escrow chain, and ChainsLowOnGas: how many
  are under GAS_ALERT_BALANCE (native units: one number for all chains, or JSON per chain;
  default 0.05). The provider pays the gas of locks, claims and cancels from that balance.
"""
from __future__ import annotations

import json
import logging
import os
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

from chalicelib.observability.context import annotate, record

log = logging.getLogger(__name__)

DEFAULT_GAS_ALERT = Decimal("0.05")
DEADLINE_MARGIN = 900  # s after the latest a job can end (time to be scheduled, events to arrive)


def gas_alert_balances(chain_ids: Iterable[int], env: Mapping[str, str] | None = None) -> dict[int, Decimal]:
    """GAS_ALERT_BALANCE per chain: "0.1" (every chain) or {"8996": "0.1", ...} (others: default)."""
    env = os.environ if env is None else env
    raw = (env.get("GAS_ALERT_BALANCE") or "").strip()
    chains = list(chain_ids)
    try:
        if raw.startswith("{"):
            given = {int(chain): Decimal(str(value)) for chain, value in json.loads(raw).items()}
            return {chain: given.get(chain, DEFAULT_GAS_ALERT) for chain in chains}
        return {chain: Decimal(raw) if raw else DEFAULT_GAS_ALERT for chain in chains}
    except (ValueError, InvalidOperation, AttributeError, TypeError):
        from chalicelib.errors import ConfigurationError

        raise ConfigurationError("GAS_ALERT_BALANCE must be a number or JSON {chainId: number} (native units)") from None


def reconciled(report: Any) -> None:
    """The run's own metrics and its line's summary."""
    summary = report.as_dict()
    repairs = {"abandoned": len(summary.get("abandoned", [])),
               "applied": sum(1 for action in summary.get("applied", {}).values() if action in ("updated", "attached")),
               "settled": len(summary.get("settled", {})), "healed": int(summary.get("healed", 0))}
    annotate(report={**repairs, "described": summary.get("described", 0), "errors": summary.get("errors", 0)})
    record("ReconcilerRuns")
    record("ReconcilerErrors", summary.get("errors", 0))
    for kind, count in repairs.items():
        if count:
            record("ReconcilerRepairs", count, kind=kind)


def past_deadline(environments: Iterable[Any], jobs: Any = None, now: float | None = None) -> dict[str, int]:
    """Jobs past their deadline per environment (0s included: the dashboard shows them)."""
    from chalicelib.compute import status as st
    from chalicelib.compute.job_placement import STAGE_MARGIN_SECONDS

    if jobs is None:
        from chalicelib.models import JobRecord as jobs
    now = time.time() if now is None else now
    counts: dict[str, int] = {}
    for environment in environments:
        longest = environment.max_job_duration + STAGE_MARGIN_SECONDS + DEADLINE_MARGIN
        late = 0
        for job in jobs.active.query(environment.id, attributes_to_get=["jobId", "status", "dateCreated", "activeEnvironment",
                                                                        "updatedAt"]):
            if not st.is_terminal(int(job.status)) and float(job.date_created) + longest < now:
                late += 1
        counts[environment.id] = late
        record("JobsPastDeadline", late, environment=environment.id)
    return counts


def gas(balances: Mapping[str, str | None], alerts: Mapping[int, Decimal]) -> int:
    """ProviderGasBalance per chain and ChainsLowOnGas; a chain whose node did not answer counts
    as low (the provider cannot send there either)."""
    low = 0
    for chain, wei in balances.items():
        if wei is None:
            low += 1
            continue
        native = Decimal(int(wei)) / Decimal(10**18)
        record("ProviderGasBalance", float(native), "None", chain=str(chain))
        if native < alerts.get(int(chain), DEFAULT_GAS_ALERT):
            low += 1
    record("ChainsLowOnGas", low)
    return low


def after_reconcile(report: Any) -> None:
    """Everything above, for the deployment's environments and escrow chains; a part that fails
    is logged and counted as an error, the others still report."""
    reconciled(report)
    try:
        from chalicelib.compute.environments import environments

        past_deadline(environments().values())
    except Exception as error:  # noqa: BLE001 - the alarm on missing data covers a lasting failure
        log.error("jobs past deadline not counted (%s)", type(error).__name__)
        record("ReconcilerErrors")
    try:
        from chalicelib import services

        if services.escrow_enabled():
            from chalicelib.payments.setup import escrow_addresses

            chains = sorted(escrow_addresses())
            gas(services.payments().gas_balances(chains), gas_alert_balances(chains))
    except Exception as error:  # noqa: BLE001
        log.error("gas balances not read (%s)", type(error).__name__)
        record("ReconcilerErrors")
