"""No capability reaches the algorithm container, whatever its image (issue 18, point 1), shown
with real runc.

The containers are the bundles Docker 25 writes for the job's containers on an ECS instance
(tests/infra/oci_lab.py: the dispatcher's user 4000:4000, Docker's 14 default capabilities in
bounding/effective/permitted, no_new_privs as the instances' daemon.json sets it, host
networking). The image is a static probe; its "ENTRYPOINT" is a copy given
`setcap cap_setuid,cap_setgid+ep` that calls setgid(0); setuid(0).

Bare runc is what an instance did before; "wrapped" is the same call through the runtime exactly
as the launch templates' user data installs it (taken out of infra/resources.yaml).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from oci_lab import DOCKER_DEFAULT_CAPABILITIES, Lab, capability_names, exec_process, status_fields

from chalicelib.compute.job_placement import NETWORK_UID, SEALED_UID, algorithm_uid
from infra import network_rules
from infra_helpers import ROOT

pytestmark = pytest.mark.timeout(240)
RUNNER_CAPABILITIES = {"cap_chown", "cap_dac_read_search", "cap_fowner"}
DOCKER_DEFAULTS = {name.lower() for name in DOCKER_DEFAULT_CAPABILITIES}


def _caps(lab: Lab, bundle: Path, wrapped: bool = True) -> dict[str, str]:
    done = lab.run(bundle, wrapped=wrapped)
    assert done.returncode == 0, done.stderr
    return status_fields(done.stdout)


# -- the attack, and the runtime against it ----------------------------------------------------

def test_bare_runc_lets_a_file_capped_entrypoint_become_root(lab):
    """What an instance did before: Docker 25's capability sets for user 4000 plus
    no-new-privileges, and the image's file-capped ENTRYPOINT is root."""
    assert algorithm_uid(False) == SEALED_UID
    done = lab.run(lab.bundle(["/escalate", "escalate"], uid=SEALED_UID), wrapped=False)
    assert "setgid=ok setuid=ok uid=0 euid=0 gid=0" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("uid", [SEALED_UID, NETWORK_UID])
def test_through_the_instances_runtime_a_file_capped_entrypoint_cannot_even_start(lab, uid):
    """With every set empty the kernel refuses to exec a binary whose file capabilities it could
    not grant (EPERM), so the container fails instead of running the image as root."""
    done = lab.run(lab.bundle(["/escalate", "escalate"], uid=uid), wrapped=True)
    assert done.returncode != 0
    assert "uid=0" not in done.stdout
    assert "operation not permitted" in (done.stderr + json.dumps(lab.log_lines())).lower()


@pytest.mark.parametrize("uid", [SEALED_UID, NETWORK_UID])
def test_the_algorithm_container_holds_no_capability_and_cannot_change_its_ids(lab, uid):
    """No capability in any set, no_new_privs, and no supplementary group but its own (Docker
    adds the groups an image's /etc/group gives the UID: a hostile one can list it in root's)."""
    bundle = lab.bundle(["/probe", "caps"], uid=uid)
    spec = lab.spec(bundle)
    spec["process"]["user"]["additionalGids"] = [uid, 0, 6]
    (bundle / "config.json").write_text(json.dumps(spec))
    assert _caps(lab, bundle, wrapped=False)["Groups"] == f"0 6 {uid}"
    sets = _caps(lab, bundle)
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(sets[name], 16) == 0, sets
    assert sets["NoNewPrivs"] == "1" and sets["Groups"] == str(uid)
    done = lab.run(lab.bundle(["/probe", "escalate"], uid=uid), wrapped=True)  # an image without file caps runs
    assert done.returncode == 1
    assert f"setgid=Operation not permitted setuid=Operation not permitted uid={uid} euid={uid}" in done.stdout


def test_a_file_capped_healthcheck_run_by_exec(lab):
    """Docker runs a HEALTHCHECK (and `docker exec`) as `runc exec --process FILE`, the process
    built from the container's spec as Docker made it, with its capabilities: even in a
    container the runtime created, bare runc would run it as root. Through the runtime it cannot
    start; and an exec without --process is refused."""
    bundle = lab.bundle(["/probe", "serve-abstract", "c2d-healthcheck"], uid=SEALED_UID)
    docker_made = lab.spec(bundle)  # what containerd keeps; the runtime rewrites only the bundle's copy
    container = lab.start(bundle, wrapped=True)
    healthcheck = exec_process(docker_made, ["/escalate", "escalate"])
    assert healthcheck["capabilities"]["permitted"] == DOCKER_DEFAULT_CAPABILITIES  # as Docker hands it over
    bare = lab.exec(container, healthcheck, wrapped=False)
    assert "uid=0 euid=0" in bare.stdout, bare.stdout + bare.stderr
    wrapped = lab.exec(container, healthcheck, wrapped=True)
    assert wrapped.returncode != 0 and "uid=0" not in wrapped.stdout
    plain = lab.exec(container, exec_process(docker_made, ["/probe", "caps"]), wrapped=True)
    assert plain.returncode == 0 and int(status_fields(plain.stdout)["CapPrm"], 16) == 0
    cli = lab.run_command(["exec", "--cap", "CAP_SETUID", container.id, "/escalate", "escalate"])
    assert cli.returncode != 0 and "exec without --process" in cli.stderr


# -- the runner's containers, and everything else ----------------------------------------------

def test_the_runners_root_containers_keep_only_what_they_need(lab):
    sets = _caps(lab, lab.bundle(["/probe", "caps"], uid=0))
    for name in ("CapPrm", "CapEff", "CapBnd"):
        assert capability_names(sets[name]) == RUNNER_CAPABILITIES
    assert int(sets["CapInh"], 16) == int(sets["CapAmb"], 16) == 0 and sets["NoNewPrivs"] == "1"


def test_a_root_container_of_no_batch_job_is_left_alone(lab):
    """The ECS agent's own container (root, no AWS_BATCH_JOB_ID): not a byte of its spec changes."""
    bundle = lab.bundle(["/probe", "caps"], uid=0, batch_job=False)
    before = (bundle / "config.json").read_bytes()
    sets = _caps(lab, bundle)
    assert capability_names(sets["CapEff"]) == DOCKER_DEFAULTS
    assert (bundle / "config.json").read_bytes() == before


def _host_mounts(data: Path) -> list[dict[str, object]]:
    """This machine's Python, the project and busybox, read-only, for containers that run the
    real runner code; /data is the job's volume."""
    mounts: list[dict[str, object]] = [{"destination": "/usr", "type": "bind", "source": "/usr",
                                         "options": ["rbind", "ro", "rprivate"]},
                                        # before the binds: a checkout under /tmp stays visible above it
                                        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                         "options": ["nosuid", "nodev"]}]
    for path in sorted({Path(sys.base_prefix).resolve(), ROOT}):
        if not str(path).startswith("/usr/"):
            mounts.append({"destination": str(path), "type": "bind", "source": str(path),
                           "options": ["rbind", "ro", "rprivate"]})
    return mounts


def _runner_rootfs(lab: Lab) -> Path:
    rootfs = lab.root / "runner-rootfs"
    if not rootfs.exists():
        rootfs.mkdir()
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / name
            if host.is_symlink():
                (rootfs / name).symlink_to(os.readlink(host))
            elif host.is_dir():
                shutil.copytree(host, rootfs / name, symlinks=True)
    return rootfs


CONFIGURE = """import sys; sys.path.insert(0, {root!r})
from pathlib import Path
from runner.layout import Layout
Layout(Path("/data")).create({uid})
print("configured")
"""
PUBLISH = """import sys; sys.path.insert(0, {root!r})
from pathlib import Path
from runner.publish import collect_outputs, open_regular
outputs = Path("/data/outputs")
for path, name in collect_outputs(outputs, 10**6):
    handle = open_regular(outputs / path, outputs)
    print(name, handle.read() if handle else None)
handle = open_regular(Path("/data/logs/algorithm.log"), Path("/data/logs"))
print("log", handle.read() if handle else None)
"""
# What a hostile algorithm leaves behind: outputs and its log unreadable to anyone but their owner.
ALGORITHM = ("echo secret > /data/outputs/a.txt && mkdir /data/outputs/d && echo nested > /data/outputs/d/b.txt"
             " && echo hello >> /data/logs/algorithm.log"
             " && chmod 000 /data/outputs/a.txt /data/outputs/d/b.txt /data/outputs/d /data/logs/algorithm.log"
             " && chmod 000 /data/outputs && echo written")


def _runner_job(lab: Lab, runner_caps: list[str] | None = None) -> tuple[str, str]:
    """configure, a hostile algorithm, publish, on one /data; the runner's containers through the
    runtime (or, with `runner_caps`, bare runc with those capabilities). Returns what configure
    and publish printed."""
    data = lab.root / f"data-{os.urandom(4).hex()}"
    data.mkdir()
    rootfs, busybox = _runner_rootfs(lab), os.path.realpath(shutil.which("busybox") or "/bin/busybox")

    def runner(code: str) -> str:
        bundle = lab.bundle([sys.executable, "-c", code.format(root=str(ROOT), uid=SEALED_UID)], uid=0, rootfs=rootfs,
                            data_dir=data, extra_mounts=_host_mounts(data), env=["PYTHONDONTWRITEBYTECODE=1"])
        if runner_caps is not None:
            spec = lab.spec(bundle)
            spec["process"]["capabilities"] = {name: list(runner_caps) for name in ("bounding", "effective", "permitted")}
            (bundle / "config.json").write_text(json.dumps(spec))
        done = lab.run(bundle, wrapped=runner_caps is None)
        return done.stdout + done.stderr

    configured = runner(CONFIGURE)
    algorithm = lab.run(lab.bundle([busybox, "sh", "-c", ALGORITHM], uid=SEALED_UID, rootfs=rootfs, data_dir=data,
                                   extra_mounts=_host_mounts(data)), wrapped=True)
    if "configured" in configured:
        assert "written" in algorithm.stdout, algorithm.stdout + algorithm.stderr
    return configured, runner(PUBLISH)


def test_the_runner_does_its_work_with_only_those_capabilities(lab):
    """The real configure (runner/layout.py) and publish (runner/publish.py) code, as root with
    only CAP_CHOWN, CAP_FOWNER and CAP_DAC_READ_SEARCH: configure hands outputs/ and the log to
    the algorithm's UID, and publish reads all the algorithm left, whatever modes it set."""
    configured, published = _runner_job(lab)
    assert "configured" in configured, configured
    assert "a.txt b'secret\\n'" in published and "d/b.txt b'nested\\n'" in published, published
    assert "log b'hello\\n'" in published, published


@pytest.mark.parametrize("missing, failing_stage", [("CAP_FOWNER", "configure"), ("CAP_DAC_READ_SEARCH", "publish"),
                                                     ("CAP_CHOWN", "configure")])
def test_each_runner_capability_is_needed(lab, missing, failing_stage):
    kept = [name for name in ("CAP_CHOWN", "CAP_DAC_READ_SEARCH", "CAP_FOWNER") if name != missing]
    configured, published = _runner_job(lab, runner_caps=kept)
    if failing_stage == "configure":
        assert "configured" not in configured and "PermissionError" in configured, configured
    else:
        assert "configured" in configured, configured
        assert "secret" not in published and "log None" in published, published


# -- failing closed ------------------------------------------------------------------------------

def test_what_the_runtime_cannot_read_does_not_start(lab):
    garbage = lab.bundle(["/probe", "caps"], uid=SEALED_UID)
    (garbage / "config.json").write_text("{not json")
    odd_user = lab.bundle(["/probe", "caps"], uid=SEALED_UID)
    spec = lab.spec(odd_user)
    spec["process"]["user"]["uid"] = "4000"
    (odd_user / "config.json").write_text(json.dumps(spec))
    for bundle in (garbage, odd_user):
        done = lab.run(bundle, wrapped=True)
        assert done.returncode == 1 and "refused to start the container" in done.stderr, done.stderr
    assert any("refused to start the container" in line.get("msg", "") for line in lab.log_lines())  # Docker's error
    unknown = lab.run_command(["create", "--new-option", "x", "--bundle", str(garbage), "c2d-unknown"])
    assert unknown.returncode == 1 and "unknown option '--new-option'" in unknown.stderr
    assert not lab.exists("c2d-unknown")
    restore = lab.run_command(["restore", "--bundle", str(garbage), "c2d-restore"])
    assert restore.returncode == 1 and "checkpoint/restore" in restore.stderr


# Run in a mount namespace of its own with a tmpfs on /dev: /dev/log (where journald listens on
# an instance) is a datagram socket of this script, and the runtime is called as Docker would.
JOURNAL = """import json, os, socket, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/dev"], check=True)
journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
journal.bind("/dev/log")
journal.settimeout(10)
with open(sys.argv[2], "w") as output:  # a created container keeps the runtime's stdio: a file, not a pipe
    for command in json.loads(sys.argv[1]):
        subprocess.run(command, stdin=output, stdout=output, stderr=output, timeout=60)
        print(journal.recv(4096).decode(errors="replace"), flush=True)
"""


def test_what_the_runtime_does_and_refuses_goes_to_the_journal(lab):
    sealed = lab.bundle(["/probe", "caps"], uid=SEALED_UID)
    garbage = lab.bundle(["/probe", "caps"], uid=SEALED_UID)
    (garbage / "config.json").write_text("[")
    commands = [[*lab.runtime_command(True), "create", "--bundle", str(bundle), f"c2d-journal-{n}"]
                for n, bundle in enumerate((sealed, garbage))]
    lab.started.append("c2d-journal-0")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", JOURNAL,
                           json.dumps(commands), str(lab.root / "journal-test.out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sealing, refusal = done.stdout.splitlines()
    assert "c2d-oci-runtime[" in sealing and "create c2d-journal-0: uid 4000: no capabilities" in sealing
    assert "a network namespace of its own" in sealing and sealing.startswith("<30>")  # daemon.info
    assert "c2d-oci-runtime[" in refusal and "refused to start the container" in refusal and refusal.startswith("<27>")


def test_the_nvidia_name_chains_to_the_nvidia_runtime_or_refuses(lab):
    done = lab.run(lab.bundle(["/probe", "caps"], uid=SEALED_UID), wrapped=True, name="c2d-nvidia")
    if shutil.which("nvidia-container-runtime"):
        pytest.skip("this machine has nvidia-container-runtime")
    assert done.returncode == 1 and "nvidia-container-runtime not found" in done.stderr


def test_commands_that_start_nothing_pass_through(lab):
    version = lab.run_command(["--version"])
    assert version.returncode == 0 and "runc version" in version.stdout
    assert lab.run_command(["state", "c2d-no-such-container"]).returncode != 0  # runc's own answer
    features = lab.run_command(["features"])  # what dockerd asks a runtime when it starts
    bare = lab.run_bare(["features"])
    assert (features.returncode, features.stdout) == (bare.returncode, bare.stdout)


# -- the installed file itself ---------------------------------------------------------------------

def _module(tmp_path: Path, source: str):
    path = tmp_path / "oci_runtime_installed.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("oci_runtime_installed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_installed_runtime_is_python_39_and_matches_the_dispatcher(installed_runtime, tmp_path):
    """AL2023's python3 is 3.9: the installed source parses as 3.9; it seals the dispatcher's
    sealed UID and knows the names the user data links and registers."""
    ast.parse(installed_runtime, feature_version=(3, 9))
    assert installed_runtime.startswith("#!/usr/bin/python3 -I\n")
    module = _module(tmp_path, installed_runtime)
    assert module.SEALED_UID == SEALED_UID
    assert set(module.NEXT_RUNTIMES) == set(network_rules.RUNTIME_LINKS)
    assert {Path(link).name for link in network_rules.RUNTIME_LINKS.values()} == set(module.NEXT_RUNTIMES)


def _python39() -> str | None:
    candidates = [*sorted(Path.home().glob(".pyenv/versions/3.9.*/bin/python3.9")), shutil.which("python3.9")]
    for candidate in filter(None, candidates):
        tried = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True, timeout=30)
        if tried.stdout.strip() == "(3, 9)":
            return str(candidate)
    return None


def test_the_installed_runtime_runs_on_python_39(lab):
    """Where a Python 3.9 is at hand (AL2023's python3 is 3.9), the installed runtime seals under
    it as under this Python; the syntax check above holds everywhere."""
    python = _python39()
    if python is None:
        pytest.skip("no Python 3.9 on this machine (the syntax check still runs)")
    lab.python = python
    try:
        sets = _caps(lab, lab.bundle(["/probe", "caps"], uid=SEALED_UID))
        assert int(sets["CapPrm"], 16) == 0 and sets["NoNewPrivs"] == "1"
        assert lab.run(lab.bundle(["/escalate", "escalate"], uid=SEALED_UID), wrapped=True).returncode != 0
        assert capability_names(_caps(lab, lab.bundle(["/probe", "caps"], uid=0))["CapEff"]) == RUNNER_CAPABILITIES
    finally:
        lab.python = sys.executable


def test_docker_and_the_ecs_agent_are_pointed_at_the_runtime(installed_runtime, tmp_path):
    """`oci-runtime --c2d-configure DAEMON_JSON ECS_CONFIG` (the user data's call) on an existing
    daemon.json: default runtime c2d-runc, no-new-privileges, other settings kept. On a GPU
    instance also the c2d-nvidia runtime, and ECS_NVIDIA_RUNTIME: the agent names its NVIDIA
    runtime explicitly for GPU containers (amazon-ecs-agent agent/api/task/task.go,
    overrideContainerRuntime), which Docker's default runtime would not cover."""
    runtime = tmp_path / "oci-runtime"
    runtime.write_text(installed_runtime)
    daemon, ecs = tmp_path / "docker" / "daemon.json", tmp_path / "ecs" / "ecs.config"
    daemon.parent.mkdir()
    daemon.write_text(json.dumps({"log-driver": "json-file", "runtimes": {"other": {"path": "/usr/bin/other"}}}))
    done = subprocess.run([sys.executable, "-I", str(runtime), "--c2d-configure", str(daemon), str(ecs)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    config = json.loads(daemon.read_text())
    assert config["default-runtime"] == "c2d-runc" and config["no-new-privileges"] is True
    assert config["runtimes"]["c2d-runc"] == {"path": network_rules.RUNTIME_LINKS["c2d-runc"]}
    assert config["log-driver"] == "json-file" and config["runtimes"]["other"] == {"path": "/usr/bin/other"}
    if not shutil.which("nvidia-container-runtime"):
        assert "c2d-nvidia" not in config["runtimes"] and not ecs.exists()
    ecs.parent.mkdir(exist_ok=True)
    ecs.write_text("ECS_CLUSTER=batch\nECS_NVIDIA_RUNTIME=nvidia\n")
    _module(tmp_path, installed_runtime).configure_docker(str(daemon), str(ecs), gpu=True)
    config = json.loads(daemon.read_text())
    assert config["runtimes"]["c2d-nvidia"] == {"path": network_rules.RUNTIME_LINKS["c2d-nvidia"]}
    assert ecs.read_text() == "ECS_CLUSTER=batch\nECS_NVIDIA_RUNTIME=c2d-nvidia\n"
