"""The canary's probe judged as on AWS (`where: aws`), in the algorithm container as an instance
runs it, with real runc: Docker 25's bundle for the algorithm (user 4000, Docker's default
capabilities, no_new_privs, host networking, the task's credential variables), the container's
real command (the algorithm script: busybox as PID 1, the DDO's entrypoint `python $ALGO`) behind
canary/Dockerfile's ENTRYPOINT (canary/escalate.py run by a `cap_setuid,cap_setgid+p` python), and
its HEALTHCHECK run by `runc exec --process` while the probe runs. Two probes side by side, on an
"instance" network namespace with a stand-in outside host and instance metadata service
(tests/infra/test_sealed_network.py).

Bare runc is an instance without the C2D runtime: the probe's lines FAIL (capabilities, the
ENTRYPOINT and HEALTHCHECK become root, interfaces, metadata, the internet, each other's
listeners). Through the runtime as the user data installs it, the same containers show no FAIL.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from oci_lab import Lab, exec_process
from test_algorithm_capabilities import _host_mounts, _runner_rootfs
from test_sealed_network import METADATA, OUTSIDE, Network

from canary.plan import PROBE_FILE, ProbeJob, plan_jobs
from canary.verdict import FAIL, PASS, Outcome, pair_row
from chalicelib.compute.algorithm_script import algorithm_command
from chalicelib.compute.job_placement import SEALED_UID
from runner.layout import Layout

pytestmark = pytest.mark.timeout(300)
ESCALATE = Path(__file__).resolve().parents[2] / "canary" / "escalate.py"
CAPPED, CAPPED_DIR = "/usr/local/bin/c2d-canary-capped", "/usr/local/lib/c2d-canary"
PYTHON = str(Path(sys.base_prefix).resolve() / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")
WINDOW = 5.0


@pytest.fixture(scope="module")
def network(lab: Lab) -> Iterator[Network]:
    made = Network()
    try:
        made.up()
    except (OSError, subprocess.CalledProcessError) as error:
        made.down()
        pytest.skip(f"network namespaces cannot be made here (iproute2): {error}")
    try:
        yield made
    finally:
        lab.cleanup()
        made.down()


def image_files(lab: Lab) -> Path:
    """What canary/Dockerfile adds to python:3.13-slim: the +p python copy and escalate.py."""
    folder = lab.root / "canary-image"
    if not folder.exists():
        (folder / "lib").mkdir(parents=True)
        shutil.copy2(PYTHON, folder / "c2d-canary-capped")
        subprocess.run(["setcap", "cap_setuid,cap_setgid+p", str(folder / "c2d-canary-capped")], check=True)
        shutil.copy2(ESCALATE, folder / "lib" / "escalate.py")
    return folder


def job_volume(lab: Lab, job: ProbeJob) -> Path:
    """/data as configure leaves it (runner.layout, as root): the probe, its algoCustomData, busybox, ready."""
    data = lab.root / f"data-{job.config['run']}-{job.role}"
    layout = Layout(data)
    layout.install_busybox(os.path.realpath(shutil.which("busybox") or "/bin/busybox"))
    layout.create(SEALED_UID)
    (layout.inputs / "did:op:canary").mkdir(mode=0o755)
    (layout.inputs / "did:op:canary" / "0").write_text("{}")
    layout.custom_data.write_text(json.dumps(job.algocustomdata()))
    layout.algorithm.write_text(PROBE_FILE.read_text())
    layout.mark_ready()
    return data


def start(lab: Lab, network: Network, job: ProbeJob, wrapped: bool) -> tuple[Path, object, dict]:
    data = job_volume(lab, job)
    image = image_files(lab)
    mounts = _host_mounts(data) + [
        {"destination": "/usr/local/bin", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": "/usr/local/lib", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": CAPPED, "type": "bind", "source": str(image / "c2d-canary-capped"), "options": ["bind", "ro"]},
        {"destination": CAPPED_DIR, "type": "bind", "source": str(image / "lib"), "options": ["bind", "ro"]},
    ]
    command = [CAPPED, f"{CAPPED_DIR}/escalate.py", "--entrypoint", *algorithm_command(f"{PYTHON} $ALGO")]
    bundle = lab.bundle(command, uid=SEALED_UID, rootfs=_runner_rootfs(lab), data_dir=data, extra_mounts=mounts,
                        env=["ALGO=/data/transformations/algorithm", "C2D_MAX_SECONDS=120"])
    docker_made = lab.spec(bundle)
    container = lab.start(bundle, wrapped=wrapped, netns=network.instance, ready=False)
    return data, container, docker_made


def run_pair(lab: Lab, network: Network, wrapped: bool) -> list[Outcome]:
    run = f"{'w' if wrapped else 'b'}{os.urandom(3).hex()}"
    jobs = plan_jobs([("runc", False)], where="aws", run=run, window=WINDOW,
                     decoys={"outside": [f"{OUTSIDE}:8080"]}, rng=random.Random(run))
    started = [start(lab, network, job, wrapped) for job in jobs]
    time.sleep(2)  # the HEALTHCHECK's first run, as Docker's after its start period
    for _, container, docker_made in started:
        lab.exec(container, exec_process(docker_made, [CAPPED, f"{CAPPED_DIR}/escalate.py", "--healthcheck"]),
                 wrapped=wrapped, netns=network.instance)
    outcomes = []
    for job, (data, container, _) in zip(jobs, started):
        result = data / "outputs" / "canary.json"
        deadline = time.monotonic() + 120
        while not (data / "outputs" / "canary.txt").exists():
            assert time.monotonic() < deadline and running(lab, container.id), container.text()[-3000:]
            time.sleep(0.2)
        outcomes.append(Outcome(job, container.id, {"status": 70}, json.loads(result.read_text())))
    return outcomes


def running(lab: Lab, container_id: str) -> bool:
    """Whether the container's process is still there (else the probe died before writing its result)."""
    state = subprocess.run(["runc", "--root", str(lab.state), "state", container_id], capture_output=True, text=True)
    return state.returncode == 0 and json.loads(state.stdout).get("status") in ("created", "running")


def statuses(outcome: Outcome) -> dict[str, tuple[str, str]]:
    return {row["check"]: (row["status"], row["detail"]) for row in outcome.result["rows"]}


def test_on_an_instance_without_the_runtime_the_probe_fails(lab, network):
    outcomes = run_pair(lab, network, wrapped=False)
    for outcome in outcomes:
        found = statuses(outcome)
        for check in ("caps.bounding", "net.interfaces", "imds.v1", "imds.v2_token", "net.internet",
                      "file_caps.entrypoint", "file_caps.healthcheck"):
            assert found[check][0] == FAIL, (check, found[check])
        assert "gained=yes" in found["file_caps.entrypoint"][1] and "euid=0" in found["file_caps.healthcheck"][1]
        assert f"{METADATA}:80 GET credentials: connected" in found["imds.v1"][1]
        assert f"{OUTSIDE}:8080: connected" in found["net.internet"][1]
    row = pair_row("runc", *outcomes)
    assert row.status == FAIL and "a->b tcp" in row.detail and "a->b abstract" in row.detail, row


def test_through_the_instances_runtime_the_probe_finds_no_escape(lab, network):
    outcomes = run_pair(lab, network, wrapped=True)
    for outcome in outcomes:
        found = statuses(outcome)
        assert not [(check, detail) for check, (status, detail) in found.items() if status == FAIL]
        for check in ("identity.uid", "identity.groups", "caps.bounding", "no_new_privs", "file_caps.setfcap",
                      "file_caps.exec", "file_caps.entrypoint", "file_caps.healthcheck", "net.interfaces", "imds.v1",
                      "imds.v2_token", "ecs.credentials_uri", "ecs.metadata", "ecs.agent_ports", "net.internet",
                      "net.private_ranges", "proc.other_processes", "fs.inputs", "fs.logs", "fs.system",
                      "env.credentials"):
            assert found[check][0] == PASS, (check, found[check])
        assert "no route (own network namespace)" in found["imds.v1"][1]
        assert f"{CAPPED}: ran: " in found["file_caps.exec"][1] and "gained=no" in found["file_caps.exec"][1]
    assert pair_row("runc", *outcomes).status == PASS
