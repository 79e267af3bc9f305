"""The canary's verdict: every probe's own lines, the lines only two probes together can decide
(did one reach the other; did a network-allowed job share a host with a sealed one), and a job
that did not complete. Any FAIL, or any probe job that did not complete, fails the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from canary.plan import NETWORK_ROLE, SEALED_ROLES, ProbeJob

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Row:
    environment: str
    job: str
    check: str
    status: str
    detail: str


@dataclass
class Outcome:
    """What became of one probe job: its last status object and its canary.json, if any."""

    job: ProbeJob
    job_id: str = ""
    status: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    problem: str = ""  # why it did not complete (start refused, timed out, no result)
    log_polls: int = 0  # computeStreamableLogs asked while the job ran
    log_seen: str = ""  # the status at which the probe's first line was in it

    def log_row(self) -> Row:
        """computeStreamableLogs while the algorithm runs (on AWS: read from ALGORITHM_LOG_GROUP,
        which the jobs' execution role must be able to write)."""
        job = self.job
        if self.log_seen:
            return Row(job.environment, job.label, "logs.while_running", PASS,
                       f"computeStreamableLogs showed the probe's first line while the job was at {self.log_seen}")
        if self.log_polls < 3:
            return Row(job.environment, job.label, "logs.while_running", SKIP,
                       f"asked only {self.log_polls} time(s) while the job ran: too short to tell")
        return Row(job.environment, job.label, "logs.while_running", FAIL,
                   f"asked {self.log_polls} times while the job ran; its log never showed the probe's first line")

    @property
    def completed(self) -> bool:
        return not self.problem and self.result is not None


def rows_for(outcomes: Sequence[Outcome]) -> list[Row]:
    rows: list[Row] = []
    for outcome in outcomes:
        job = outcome.job
        if not outcome.completed:
            rows.append(Row(job.environment, job.label, "job.completed", FAIL, outcome.problem or "no result"))
            continue
        rows.append(Row(job.environment, job.label, "job.completed", PASS,
                        f"job {outcome.job_id} ended {outcome.status.get('status') if outcome.status else '?'}"))
        rows += [Row(job.environment, job.label, item["check"], item["status"], item["detail"])
                 for item in outcome.result.get("rows", [])]
        rows.append(outcome.log_row())
    for environment in dict.fromkeys(o.job.environment for o in outcomes):
        rows += cross_job_rows(environment, [o for o in outcomes if o.job.environment == environment])
    return rows


def _facts(outcome: Outcome) -> dict[str, Any]:
    return outcome.result.get("facts", {}) if outcome.result else {}


def _peers(outcome: Outcome) -> dict[str, Any]:
    return _facts(outcome).get("peers") or {}


def _contacts(x: Outcome, y: Outcome) -> list[str]:
    """Every way x reached y or y heard from x (the listener's side is evidence too)."""
    role_x, role_y = x.job.role, y.job.role
    made = [f"{role_x}->{role_y} {kind}" for kind in _peers(x).get("reached", {}).get(role_y, [])]
    made += [f"{role_x}->{role_y} {kind} (heard by {role_y})" for kind in _peers(y).get("heard", {}).get(role_x, [])
             if kind not in _peers(x).get("reached", {}).get(role_y, [])]
    return made


def _endpoints(outcome: Outcome) -> str:
    listen = _peers(outcome).get("listen") or outcome.job.config["listen"]
    return f"{outcome.job.role}: 127.0.0.1:{listen.get('port') or listen['ports']} and @{listen['abstract']}"


def pair_row(environment: str, x: Outcome, y: Outcome) -> Row:
    """Two sealed probes: neither may reach the other's loopback port or abstract socket. That
    proves something only if they ran on one host at one time, and if each could reach its own."""
    label = f"{x.job.label}+{y.job.label}"
    contacts = _contacts(x, y) + _contacts(y, x)
    if contacts:
        return Row(environment, label, "jobs.other_job_listeners", FAIL, "reached: " + ", ".join(contacts))
    broken = [f"{o.job.role} {kind}: {what}" for o in (x, y) for kind, what in _peers(o).get("selfTest", {}).items()
              if "c2d-canary" not in what]
    if broken or not _peers(x) or not _peers(y):
        return Row(environment, label, "jobs.other_job_listeners", SKIP,
                   "a probe could not reach even its own listeners: " + ("; ".join(broken) or "it never listened"))
    boots = (_facts(x).get("bootId"), _facts(y).get("bootId"))
    if boots[0] != boots[1] or not boots[0]:
        return Row(environment, label, "jobs.other_job_listeners", SKIP,
                   f"the two probes ran on different hosts (boot ids {boots[0]} and {boots[1]}), so not reaching each "
                   "other proves nothing: run the canary again until Batch places them on one instance")
    overlap = min(_peers(x)["ended"], _peers(y)["ended"]) - max(_peers(x)["started"], _peers(y)["started"])
    if overlap <= 0:
        return Row(environment, label, "jobs.other_job_listeners", SKIP,
                   f"the two probes ran on one host but not at the same time ({-overlap:.0f} s apart); run it again")
    return Row(environment, label, "jobs.other_job_listeners", PASS,
               f"same host, {overlap:.0f} s side by side, neither reached the other ({_endpoints(x)}; {_endpoints(y)})")


def placement_row(environment: str, network: Outcome, sealed: Iterable[Outcome]) -> Row:
    """A network-allowed job must never share an instance (a kernel: one boot id) with a sealed one."""
    label = f"{network.job.label}+sealed"
    sealed = [s for s in sealed if s.completed]
    contacts = [c for s in sealed for c in _contacts(network, s) + _contacts(s, network)]
    if contacts:
        return Row(environment, label, "jobs.placement", FAIL, "reached: " + ", ".join(contacts))
    boot = _facts(network).get("bootId")
    shared = [s.job.role for s in sealed if _facts(s).get("bootId") == boot]
    if shared:
        return Row(environment, label, "jobs.placement", FAIL,
                   f"the network-allowed probe ran on the host of sealed probe {', '.join(shared)} (boot id {boot})")
    if not sealed or not boot:
        return Row(environment, label, "jobs.placement", SKIP, "no sealed probe completed to compare with")
    return Row(environment, label, "jobs.placement", PASS,
               f"on a host of its own (boot id {boot}; sealed: {', '.join(str(_facts(s).get('bootId')) for s in sealed)})")


def cross_job_rows(environment: str, outcomes: Sequence[Outcome]) -> list[Row]:
    by_role = {o.job.role: o for o in outcomes}
    rows = []
    pair = [by_role[role] for role in SEALED_ROLES if role in by_role]
    if len(pair) == 2 and all(o.completed for o in pair):
        rows.append(pair_row(environment, *pair))
    network = by_role.get(NETWORK_ROLE)
    if network is not None and network.completed:
        rows.append(placement_row(environment, network, pair))
    return rows


def failed(rows: Sequence[Row]) -> bool:
    return any(row.status == FAIL for row in rows)


def render(rows: Sequence[Row]) -> str:
    headers = ("environment", "job", "result", "check", "detail")
    cells = [(r.environment, r.job, r.status, r.check, r.detail) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers[:-1])]
    lines = ["  ".join(f"{value:<{widths[i]}}" for i, value in enumerate(line[:-1])) + "  " + line[-1]
             for line in [headers, *cells]]
    counts = {status: sum(1 for r in rows if r.status == status) for status in (PASS, FAIL, SKIP)}
    verdict = "FAILED: an escape or a probe that did not complete" if failed(rows) else "no escape found"
    return "\n".join(lines + ["", f"{counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[SKIP]} SKIP: {verdict}"]) + "\n"
