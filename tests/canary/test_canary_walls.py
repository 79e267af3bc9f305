"""The probe genuinely tests each wall: run by the real local backend (the real runner, a moto
server, bubblewrap), with a wall removed, the lines of that wall FAIL, and with the walls in place
the same probe passes.

Three configurations at once, each a pair of probe jobs told they are sealed (what the canary
expects of every sealed job), with the canary's planted host listeners (canary/decoys.py):
- the control: the sandbox as `make run` gives a sealed job: no FAIL, and the pair did not
  reach each other;
- without its network namespace (the job run the way a network-allowed job is, UID 4001 on the
  host's network): the network lines FAIL (interfaces, the host's loopback listener and abstract
  socket, the stand-in outside host, the other job's port and socket) and the UID is not the
  sealed one, while capabilities, files, processes and the environment still PASS;
- with no sandbox at all (the algorithm run on the host as the user running the tests): every
  wall's line FAILs as well.
"""
from __future__ import annotations

import json
import os
import random

import pytest
from test_local_sandbox import Backend, files_url, moto_url  # noqa: F401 - fixtures

from canary.decoys import Decoys
from canary.plan import PROBE_FILE, ProbeJob, new_run_id, plan_jobs
from canary.verdict import FAIL, PASS, SKIP, Outcome, pair_row, rows_for
from devstack.local_dispatch import detect_sandbox

SANDBOX, NO_SANDBOX = detect_sandbox()
pytestmark = [pytest.mark.skipif(SANDBOX is None, reason=f"no sandbox on this machine: {NO_SANDBOX}"),
              pytest.mark.timeout(240)]
WINDOW = 6.0


class ProbeBackend(Backend):
    """The sandbox test's backend, starting the canary's probe with its algoCustomData."""

    def start_probe(self, job_id: str, job: ProbeJob, *, allow_network: bool) -> str:
        return self.start(job_id, PROBE_FILE.read_text(), allow_network=allow_network,
                          algocustomdata=job.algocustomdata())

    def outcome(self, job_id: str, job: ProbeJob) -> Outcome:
        return Outcome(job, job_id, {"status": 70}, json.loads(self.result(job_id, "outputs/canary.json")))


def statuses(outcome: Outcome) -> dict[str, str]:
    return {row["check"]: row["status"] for row in outcome.result["rows"]}


def details(outcome: Outcome) -> dict[str, str]:
    return {row["check"]: row["detail"] for row in outcome.result["rows"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, moto_url, files_url):  # noqa: F811 - the sandbox test's fixtures
    """Every configuration's pair of probe jobs, run at once; the decoys' own record."""
    decoys = Decoys()
    run = new_run_id()
    planted = decoys.start(run)
    configurations = {"control": True, "no-netns": True, "unsandboxed": False}
    rng = random.Random(run)
    jobs = {name: plan_jobs([(name, False)], where="local", run=f"{run}{name[:2]}", window=WINDOW, decoys=planted, rng=rng)
            for name in configurations}
    backends = {"sandboxed": ProbeBackend(tmp_path_factory.mktemp("sandboxed"), moto_url, files_url, SANDBOX),
                "host": ProbeBackend(tmp_path_factory.mktemp("host"), moto_url, files_url, None, "test: walls removed")}
    started: dict[str, list[tuple[str, ProbeJob]]] = {}
    for name, pair in jobs.items():
        backend = backends["sandboxed" if configurations[name] else "host"]
        for job in pair:
            job_id = f"{name}-{job.role}"
            backend.start_probe(job_id, job, allow_network=name == "no-netns")
            started.setdefault(name, []).append((job_id, job))
    for backend_name, backend in backends.items():
        ids = {job_id for name, pair in started.items() for job_id, _ in pair
               if (backend_name == "sandboxed") == configurations[name]}
        events = backend.wait(ids, seconds=180)
        for job_id in ids:
            assert events[job_id][-1]["detail"]["status"] == "SUCCEEDED", (job_id, events[job_id][-1]["detail"])
    outcomes = {name: [backends["sandboxed" if configurations[name] else "host"].outcome(job_id, job) for job_id, job in pair]
                for name, pair in started.items()}
    yield outcomes, decoys.stop(), planted


def test_the_control_pair_in_the_sandbox_finds_no_escape(runs):
    outcomes, _, _ = runs
    for outcome in outcomes["control"]:
        found = statuses(outcome)
        assert FAIL not in found.values(), [row for row in outcome.result["rows"] if row["status"] == FAIL]
        for check in ("identity.uid", "caps.bounding", "no_new_privs", "net.interfaces", "net.host_loopback",
                      "net.internet", "proc.other_processes", "fs.inputs", "fs.logs", "env.credentials"):
            assert found[check] == PASS, (check, details(outcome)[check])
        assert found["imds.v1"] == SKIP and "local machine" in details(outcome)["imds.v1"]
    assert pair_row("control", *outcomes["control"]).status == PASS


def test_without_its_network_namespace_the_network_lines_fail(runs):
    outcomes, host_row, planted = runs
    for outcome in outcomes["no-netns"]:
        found = statuses(outcome)
        for check in ("net.interfaces", "net.host_loopback", "net.internet", "identity.uid"):
            assert found[check] == FAIL, (check, details(outcome)[check])
        for outside in planted["outside"]:  # the stand-in outside host, on this host's own address
            assert f"{outside}: connected" in details(outcome)["net.internet"], details(outcome)["net.internet"]
        for check in ("caps.effective", "caps.bounding", "no_new_privs", "identity.setuid", "file_caps.setfcap",
                      "fs.inputs", "fs.transformations", "fs.logs", "fs.system", "env.credentials", "proc.other_processes"):
            assert found[check] == PASS, (check, details(outcome)[check])
    row = pair_row("no-netns", *outcomes["no-netns"])
    assert row.status == FAIL and "a->b tcp" in row.detail and "a->b abstract" in row.detail, row
    assert host_row.status == FAIL and "@c2d-canary-" in host_row.detail and "127.0.0.1:" in host_row.detail, host_row


def test_with_no_sandbox_every_wall_fails(runs):
    outcomes, _, _ = runs
    expected = ["identity.uid", "net.interfaces", "net.host_loopback", "fs.system", "proc.other_processes"]
    if os.geteuid() == 0:  # as root (CI): the kernel's walls are gone too
        expected += ["identity.setuid", "caps.effective", "caps.permitted", "caps.bounding", "no_new_privs",
                     "file_caps.setfcap", "fs.inputs", "fs.logs"]
    for outcome in outcomes["unsandboxed"]:
        found = statuses(outcome)
        for check in expected:
            assert found[check] == FAIL, (check, details(outcome)[check])
    rows = rows_for(outcomes["unsandboxed"])
    assert [r for r in rows if r.check == "jobs.other_job_listeners"][0].status == FAIL
