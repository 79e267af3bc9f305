"""Real runc, and OCI bundles shaped as Docker 25 writes them for the Batch job's containers
(tests/infra/test_algorithm_capabilities.py, test_sealed_network.py).

`Lab` runs containers either with bare runc (what an instance did before) or through the OCI
runtime exactly as the launch templates' user data installs it (infra/oci_runtime.py, taken out
of infra/resources.yaml), under its name `c2d-runc`, so that it chains to the real runc.

What `docker_spec` reproduces, and where Docker takes it from (moby v25.0.9):
- capabilities: `oci.SetCapabilities` puts the default set (`oci/caps/defaults.go`, 14
  capabilities) in bounding, effective AND permitted whatever the user (since 24.0.6; 24.0.5 gave
  a non-root user the bounding set only);
- `noNewPrivileges: true`: the instances' daemon.json sets `"no-new-privileges": true`;
- the user from the container definition (`"user": "4000:4000"` for a sealed algorithm),
  `additionalGids` starting with its gid (`getUser` in daemon/oci_linux.go);
- host networking, as ECS runs every Batch job on EC2: no `network` namespace in the spec
  (`WithNamespaces`, case `networkMode.IsHost()`: `oci.RemoveNamespace(s, "network")`), and so no
  libnetwork-setkey prestart hook (`withLibnetwork` adds it only for a network namespace without
  a path); /etc/hosts, /etc/hostname and /etc/resolv.conf bind-mounted from files, and the job's
  /data volume;
- the environment ECS and Batch give every container of the task (AWS_BATCH_JOB_ID, the task
  role's credential URI, the metadata URI);
- Docker's default mounts, masked and read-only paths, and device rules.

Left out: Docker's default seccomp profile (it allows setuid/setgid and capset, so it neither
makes nor stops the attack) and AppArmor (the ECS AL2023 AMI runs SELinux, not AppArmor).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.compute.job_placement import SEALED_UID

DOCKER_DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
BATCH_JOB_ENV = [
    "AWS_BATCH_JOB_ID=5e1fd2a5-0f7f-4b6a-9c1e-0123456789ab",
    "AWS_BATCH_JOB_ATTEMPT=1",
    "AWS_BATCH_CE_NAME=ocean-c2d-dev-cpu",
    "AWS_BATCH_JQ_NAME=ocean-c2d-dev-cpu",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/11111111-2222-3333-4444-555555555555",
    "ECS_CONTAINER_METADATA_URI_V4=http://169.254.170.2/v4/0123456789abcdef-1234567890",
]
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_CHAR_DEVICES = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, -1), (10, 200)]


def docker_spec(rootfs: Path, args: list[str], *, uid: int, gid: int | None = None, batch_job: bool = True,
                data_dir: Path | None = None, etc_dir: Path | None = None,
                extra_mounts: list[dict[str, Any]] | None = None, env: list[str] | None = None) -> dict[str, Any]:
    """The config.json Docker 25 hands the runtime for one host-networked container of the task."""
    gid = uid if gid is None else gid
    environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=ip-10-0-0-12"]
    environment += (BATCH_JOB_ENV if batch_job else []) + (env or [])
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
    ]
    if data_dir is not None:  # the task's volume, as ECS mounts it
        mounts.append({"destination": "/data", "type": "bind", "source": str(data_dir), "options": ["rbind", "rprivate"]})
    if etc_dir is not None:  # Docker's per-container copies for host networking
        for name in ("resolv.conf", "hostname", "hosts"):
            mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(etc_dir / name),
                           "options": ["rbind", "rprivate"]})
    mounts += extra_mounts or []
    devices = [{"allow": False, "access": "rwm"}]
    devices += [{"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"} for major, minor in _CHAR_DEVICES]
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": args,
            "env": environment,
            "cwd": "/",
            "capabilities": {"bounding": list(DOCKER_DEFAULT_CAPABILITIES),
                             "effective": list(DOCKER_DEFAULT_CAPABILITIES),
                             "permitted": list(DOCKER_DEFAULT_CAPABILITIES)},
            "oomScoreAdj": 0,
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs)},
        "hostname": "ip-10-0-0-12",
        "mounts": mounts,
        "linux": {
            "resources": {"devices": devices},
            "cgroupsPath": f"/c2d-test-{uuid.uuid4().hex[:12]}",
            "namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "pid"}, {"type": "ipc"}],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


def write_bundle(directory: Path, spec: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(spec, indent=2))
    return directory


def exec_process(spec: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """The process.json of `docker exec` (and of a HEALTHCHECK) in that container: moby's
    `ContainerExecStart` starts from the container's spec.Process as containerd stored it, i.e. as
    Docker made it (daemon/exec.go), not as a runtime wrapper rewrote the bundle, then sets the
    args; a HEALTHCHECK runs as the container's user (daemon/health.go)."""
    process = json.loads(json.dumps(spec["process"]))
    process["args"] = args
    return process


# -- running them ----------------------------------------------------------------------------

PROBE_SOURCE = Path(__file__).with_name("oci_probe.c")


def unavailable() -> str | None:
    """Why real containers cannot run here, or None."""
    if os.geteuid() != 0:
        return "runc needs root (CI runs as root)"
    for tool, package in (("runc", "runc"), ("setcap", "libcap2-bin"), ("capsh", "libcap2-bin"), ("gcc", "gcc"),
                          ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian package {package}; `make test` installs runc and libcap2-bin as root)"
    return None


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)


@dataclass
class Container:
    """A container started with create + start (as containerd's shim does), its output in a file."""

    id: str
    output: Path
    bundle: Path

    def text(self) -> str:
        return self.output.read_text()


@dataclass
class Lab:
    root: Path
    runtime: Path  # the installed runtime file; c2d-runc and c2d-nvidia link to it
    rootfs: Path = field(init=False)
    state: Path = field(init=False)
    etc: Path = field(init=False)

    def __post_init__(self) -> None:
        self.rootfs, self.state, self.etc = self.root / "rootfs", self.root / "state", self.root / "etc"
        self.started: list[str] = []

    def setup(self) -> str | None:
        """Compile the probe, make the image (a plain and a file-capped copy), install the runtime
        under its names; returns why this cannot work here, or None."""
        for folder in (self.rootfs, self.state, self.etc, self.root / "sbin"):
            folder.mkdir(parents=True, exist_ok=True)
        built = _run(["gcc", "-static", "-O2", "-o", str(self.rootfs / "probe"), str(PROBE_SOURCE)])
        if built.returncode != 0:
            return f"gcc cannot link a static binary here: {built.stderr.strip()[-200:]}"
        shutil.copy2(self.rootfs / "probe", self.rootfs / "escalate")
        capped = _run(["setcap", "cap_setuid,cap_setgid+ep", str(self.rootfs / "escalate")])
        if capped.returncode != 0:
            return f"setcap failed here (a file system without security xattrs?): {capped.stderr.strip()[-200:]}"
        for name, text in (("resolv.conf", "nameserver 10.0.0.2\n"), ("hostname", "ip-10-0-0-12\n"),
                           ("hosts", "127.0.0.1 localhost\n")):
            (self.etc / name).write_text(text)
        self.runtime.chmod(0o755)
        for name in ("c2d-runc", "c2d-nvidia"):
            (self.root / "sbin" / name).symlink_to(self.runtime)
        tried = self.run(self.bundle(["/probe", "caps"], uid=SEALED_UID), wrapped=False)
        if tried.returncode != 0:
            return f"runc cannot run a container here: {(tried.stderr or tried.stdout).strip()[-300:]}"
        return None

    # -- bundles --

    def bundle(self, args: list[str], *, uid: int, gid: int | None = None, batch_job: bool = True,
               rootfs: Path | None = None, **options: Any) -> Path:
        spec = docker_spec(rootfs or self.rootfs, args, uid=uid, gid=gid, batch_job=batch_job,
                           etc_dir=self.etc, **options)
        return write_bundle(self.root / "bundles" / uuid.uuid4().hex[:12], spec)

    @staticmethod
    def spec(bundle: Path) -> dict[str, Any]:
        return json.loads((bundle / "config.json").read_text())

    # -- runtimes --

    python: str = sys.executable  # the instances run the runtime with AL2023's python3 (3.9)

    def runtime_command(self, wrapped: bool, name: str = "c2d-runc", netns: str | None = None) -> list[str]:
        """How containerd's shim calls the runtime: global options, then the command. Wrapped, the
        installed file runs under the name Docker knows it by, with `python`."""
        # nsenter, not `ip netns exec`: that also remounts /sys, hiding the cgroup mounts from runc.
        prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        runtime = [self.python, "-I", str(self.root / "sbin" / name)] if wrapped else ["runc"]
        return [*prefix, *runtime, "--root", str(self.state), "--log", str(self.root / "runtime.log"),
                "--log-format", "json"]

    def run(self, bundle: Path, *, wrapped: bool, netns: str | None = None,
            name: str = "c2d-runc") -> subprocess.CompletedProcess[str]:
        """`runc run` in the foreground: the process's output and exit code."""
        container = f"c2d-{uuid.uuid4().hex[:10]}"
        return _run([*self.runtime_command(wrapped, name, netns), "run", "--bundle", str(bundle), container],
                    stdin=subprocess.DEVNULL)

    def start(self, bundle: Path, *, wrapped: bool, netns: str | None = None, ready: bool = True) -> Container:
        """`create` then `start`, as the shim does; with `ready`, wait for the process's "ready" line."""
        container = Container(f"c2d-{uuid.uuid4().hex[:10]}", self.root / f"{uuid.uuid4().hex[:10]}.out", bundle)
        # The container's process keeps runc's stdio: files, not pipes, or waiting for runc would
        # wait for the container.
        with container.output.open("w") as output:
            created = subprocess.run([*self.runtime_command(wrapped, netns=netns), "create", "--bundle", str(bundle),
                                      "--pid-file", str(self.root / f"{container.id}.pid"), container.id],
                                     stdin=subprocess.DEVNULL, stdout=output, stderr=output, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"create failed: {container.text().strip()}")
        self.started.append(container.id)
        started = _run([*self.runtime_command(wrapped, netns=netns), "start", container.id])
        if started.returncode != 0:
            raise RuntimeError(f"start failed: {started.stderr.strip()}")
        deadline = time.monotonic() + 10
        while ready and "ready" not in container.text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{container.id} never became ready: {container.text()!r}")
            time.sleep(0.05)
        return container

    def exec(self, container: Container, process: dict[str, Any], *, wrapped: bool,
             netns: str | None = None) -> subprocess.CompletedProcess[str]:
        """`exec --process FILE`, as the shim runs `docker exec` and a HEALTHCHECK."""
        path = self.root / f"process-{uuid.uuid4().hex[:10]}.json"
        path.write_text(json.dumps(process))
        return _run([*self.runtime_command(wrapped, netns=netns), "exec", "--process", str(path), container.id],
                    stdin=subprocess.DEVNULL)

    def run_command(self, args: list[str], name: str = "c2d-runc") -> subprocess.CompletedProcess[str]:
        """Any runtime command line, through the installed runtime."""
        return _run([*self.runtime_command(True, name), *args], stdin=subprocess.DEVNULL)

    def run_bare(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return _run([*self.runtime_command(False), *args], stdin=subprocess.DEVNULL)

    def exists(self, container_id: str) -> bool:
        return _run(["runc", "--root", str(self.state), "state", container_id]).returncode == 0

    def cleanup(self) -> None:
        while self.started:
            _run(["runc", "--root", str(self.state), "delete", "--force", self.started.pop()])

    def log_lines(self) -> list[dict[str, Any]]:
        path = self.root / "runtime.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]



def capability_names(hex_mask: str) -> set[str]:
    """`capsh --decode` of a /proc/<pid>/status mask: {"cap_chown", ...} (empty for 0)."""
    decoded = _run(["capsh", f"--decode={hex_mask}"]).stdout.strip()
    names = decoded.partition("=")[2]
    return set(names.split(",")) if names else set()


def status_fields(line: str) -> dict[str, str]:
    """{"CapEff": "000...", "NoNewPrivs": "1", "Groups": "4000 6", ...} from the probe's `caps` line."""
    fields: dict[str, str] = {}
    name = ""
    for word in line.split():
        if word.endswith(":"):
            name = word[:-1]
            fields[name] = ""
        elif name:
            fields[name] = f"{fields[name]} {word}".strip()
    return fields
