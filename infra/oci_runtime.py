#!/usr/bin/python3 -I
"""The Batch instances' OCI runtime: Docker's runtime on every compute instance, chained to runc.

Installed by the launch templates' user data (infra/network_rules.py) as
/usr/local/libexec/c2d/oci-runtime, with two names Docker knows it by: `c2d-runc` (Docker's
default runtime; it runs `runc`) and `c2d-nvidia` (ECS_NVIDIA_RUNTIME on GPU instances, which
the ECS agent names explicitly for GPU containers; it runs `nvidia-container-runtime`, which
runs runc). Stdlib only, Python >= 3.9 (Amazon Linux 2023's python3); it runs outside this
project and imports nothing from it.

Why: Docker >= 24.0.6 gives a container whose user is not root its default capabilities in the
bounding, effective AND permitted sets, and no-new-privileges only clips what an exec gains to
the previous permitted set. So the first binary a container execs (the image's ENTRYPOINT) or
that `docker exec` runs (the image's HEALTHCHECK) gains whatever file capabilities it carries:
`cap_setuid+ep` is root, outside every owner-match network rule. Batch cannot drop capabilities,
set the entrypoint or disable the healthcheck of an ecsProperties container; the runtime can.

What it changes, in the bundle's config.json (`create`, `run`) and in the process.json of an
`exec --process` (how Docker runs a HEALTHCHECK and `docker exec`):
- a process whose user is not root (uid != 0; every algorithm container, whatever its image):
  empty bounding, effective, permitted, inheritable and ambient sets, no_new_privs, and no
  supplementary group but its own gid (the image's /etc/group cannot add one);
- a sealed algorithm container (uid SEALED_UID) also gets a network namespace of its own
  instead of the host's: only `lo`, which runc brings up itself. Nothing on the network, not the
  instance metadata service nor the ECS agent's credential endpoint, no other job's loopback
  port or abstract Unix socket. The owner-match rules stay as the second wall;
- a root process of a Batch job (AWS_BATCH_JOB_ID in its environment: the runner's configure
  and publish) keeps only RUNNER_CAPABILITIES and gets no_new_privs;
- anything else (the ECS agent's own container is root and no Batch job) is left as it is.

It fails closed: a create, run or exec it cannot read, or an option it does not know before
the container id, is refused (exit 1, the reason on stderr, in runc's --log file for Docker's
error message, and in the journal) rather than run unchanged. Every other command (start,
state, kill, delete, features, ...) goes to the next runtime untouched.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

SEALED_UID = 4000
# configure chowns outputs/ and algorithm.log to the algorithm's UID (CAP_CHOWN) and sets their
# modes after that (CAP_FOWNER: root no longer owns them); publish reads what the algorithm
# wrote, whatever modes it left (CAP_DAC_READ_SEARCH). Nothing else: no DAC_OVERRIDE, SETUID,
# NET_RAW, KILL, MKNOD...
RUNNER_CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_READ_SEARCH", "CAP_FOWNER")
BATCH_JOB_VARIABLE = "AWS_BATCH_JOB_ID"
CAPABILITY_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
# The name Docker runs this file by -> the runtime it chains to.
NEXT_RUNTIMES = {"c2d-runc": "runc", "c2d-nvidia": "nvidia-container-runtime"}
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
JOURNAL_TAG = "c2d-oci-runtime"

# runc's options (runc 1.1 to 1.3: main.go, create.go, run.go, exec.go). urfave/cli accepts
# -name, --name and --name=value; options end at the first argument that is not one.
GLOBAL_OPTIONS = {"log": True, "log-format": True, "root": True, "criu": True, "rootless": True,
                  "debug": False, "systemd-cgroup": False, "help": False, "h": False, "version": False, "v": False}
_CREATE = {"bundle": True, "b": True, "console-socket": True, "pidfd-socket": True, "pid-file": True,
           "preserve-fds": True, "no-pivot": False, "no-new-keyring": False}
COMMAND_OPTIONS = {
    "create": _CREATE,
    "run": dict(_CREATE, detach=False, d=False, keep=False, **{"no-subreaper": False}),
    "exec": {"console-socket": True, "pidfd-socket": True, "cwd": True, "env": True, "e": True, "user": True,
             "u": True, "additional-gids": True, "g": True, "process": True, "p": True, "pid-file": True,
             "process-label": True, "apparmor": True, "cap": True, "c": True, "preserve-fds": True,
             "cgroup": True, "tty": False, "t": False, "detach": False, "d": False, "no-new-privs": False,
             "ignore-paused": False},
}
# Commands that start a process from a spec; `restore` (CRIU) is never used on these instances.
SPEC_COMMANDS = ("create", "run", "exec", "restore")


class Refused(Exception):
    """The container must not start: the reason is logged and returned to Docker."""


class Unparsable(Exception):
    """The arguments are not runc's as this wrapper knows them."""


class Invocation:
    """runc's command line, split: global options, command, its options, the rest."""

    def __init__(self, argv: list[str]) -> None:
        self.globals: dict[str, str] = {}
        self.options: dict[str, str] = {}
        self.command = ""
        self.rest: list[str] = []
        index = _options(argv, 0, GLOBAL_OPTIONS, self.globals)
        if index < len(argv):
            self.command = argv[index]
            known = COMMAND_OPTIONS.get(self.command)
            self.rest = argv[index + 1:]
            if known is not None:
                index = _options(argv, index + 1, known, self.options)
                self.rest = argv[index:]

    def option(self, *names: str) -> str | None:
        for name in names:
            if name in self.options:
                return self.options[name]
        return None

    @property
    def container_id(self) -> str:
        return self.rest[0] if self.rest else "?"


def _options(argv: list[str], index: int, known: dict[str, bool], found: dict[str, str]) -> int:
    """Read options from argv[index] on into `found`; returns the index of the first other argument."""
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        if argv[index] == "--":
            return index + 1
        name, has_value, value = argv[index].lstrip("-").partition("=")
        if name not in known:
            raise Unparsable(f"unknown option {argv[index]!r}")
        if known[name] and not has_value:
            index += 1
            if index >= len(argv):
                raise Unparsable(f"option {argv[index - 1]!r} has no value")
            value = argv[index]
        found[name] = value
        index += 1
    return index


def find_runtime(name: str) -> str | None:
    for folder in SEARCH_PATH:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _uid_gid(process: dict) -> tuple[int, int]:
    user = process.get("user", {})
    if not isinstance(user, dict):
        raise Refused("process.user is not an object")
    ids = user.get("uid", 0), user.get("gid", 0)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise Refused("process.user.uid/gid are not numbers")
    return ids


def _environment(process: dict) -> set[str]:
    env = process.get("env", [])
    if not isinstance(env, list) or not all(isinstance(item, str) for item in env):
        raise Refused("process.env is not a list of strings")
    return {item.partition("=")[0] for item in env}


def seal_process(process: object) -> str:
    """Change one OCI process in place; returns what was done ("" when nothing)."""
    if not isinstance(process, dict):
        raise Refused("no process object")
    uid, gid = _uid_gid(process)
    batch_job = BATCH_JOB_VARIABLE in _environment(process)
    if uid != 0:
        process["capabilities"] = {name: [] for name in CAPABILITY_SETS}
        process["noNewPrivileges"] = True
        process["user"]["additionalGids"] = [gid]
        return f"uid {uid}: no capabilities, no_new_privs, no supplementary groups"
    if batch_job:
        kept = list(RUNNER_CAPABILITIES)
        process["capabilities"] = {"bounding": kept, "effective": list(kept), "permitted": list(kept),
                                   "inheritable": [], "ambient": []}
        process["noNewPrivileges"] = True
        return f"uid 0 of a Batch job: only {', '.join(RUNNER_CAPABILITIES)}"
    return ""


def seal_config(config: object) -> str:
    """Change a bundle's config.json in place; returns what was done ("" when nothing)."""
    if not isinstance(config, dict):
        raise Refused("config.json is not an object")
    done = seal_process(config.get("process"))
    if done and _uid_gid(config["process"])[0] == SEALED_UID:
        linux = config.setdefault("linux", {})
        namespaces = linux.setdefault("namespaces", []) if isinstance(linux, dict) else None
        if not isinstance(namespaces, list) or not all(isinstance(ns, dict) for ns in namespaces):
            raise Refused("linux.namespaces is not a list of objects")
        namespaces[:] = [ns for ns in namespaces if ns.get("type") != "network"] + [{"type": "network"}]
        done += "; a network namespace of its own (only lo)"
    return done


def _rewrite(path: str, seal) -> str:
    """Apply `seal` to the JSON document at path, written back (atomically) only if it changed."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        raise Refused(f"cannot read {path}: {error}") from None
    done = seal(document)
    if done:  # a new file beside it (O_EXCL, random name: containerd's process files live in /tmp)
        descriptor, temporary = tempfile.mkstemp(prefix=".c2d-", dir=os.path.dirname(os.path.abspath(path)))
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    return done


def journal(priority: int, message: str) -> None:
    """To the journal (journald reads /dev/log); never fails the runtime call."""
    try:
        import syslog

        syslog.openlog(JOURNAL_TAG, syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(priority, message)
    except Exception:  # noqa: BLE001 - no journal (a test machine): stderr and --log still say it
        pass


def refuse(call: Invocation | None, reason: str) -> int:
    message = f"{JOURNAL_TAG}: refused to start the container: {reason}"
    print(message, file=sys.stderr)
    journal(3, message)  # LOG_ERR
    log_file = call.globals.get("log") if call else None
    if log_file:  # what containerd's shim reads back as the runtime's error
        try:
            line = (json.dumps({"level": "error", "msg": message, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                    if call.globals.get("log-format") == "json" else f"level=error msg={json.dumps(message)}")
            with open(log_file, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError:
            pass
    return 1


def prepare(call: Invocation) -> str:
    """Seal what the call starts; returns what was done."""
    if call.command in ("create", "run"):
        bundle = call.option("bundle", "b") or "."
        return _rewrite(os.path.join(bundle, "config.json"), seal_config)
    if call.command == "exec":
        process = call.option("process", "p")
        if not process:
            raise Refused("exec without --process (Docker always passes one)")
        return _rewrite(process, seal_process)
    if call.command == "restore":
        raise Refused("checkpoint/restore is not used on compute instances")
    return ""


def configure_docker(daemon_json: str, ecs_config: str, gpu: bool, runtime_dir: str = "/usr/local/sbin") -> None:
    """Make this wrapper Docker's default runtime (and, with `gpu`, the ECS agent's NVIDIA one),
    with Docker's daemon-wide no-new-privileges. Run once by the user data."""
    config = {}
    if os.path.exists(daemon_json):
        with open(daemon_json, encoding="utf-8") as handle:
            config = json.loads(handle.read() or "{}")
    config["no-new-privileges"] = True
    runtimes = config.setdefault("runtimes", {})
    runtimes["c2d-runc"] = {"path": os.path.join(runtime_dir, "c2d-runc")}
    if gpu:
        runtimes["c2d-nvidia"] = {"path": os.path.join(runtime_dir, "c2d-nvidia")}
    config["default-runtime"] = "c2d-runc"
    os.makedirs(os.path.dirname(daemon_json), exist_ok=True)
    with open(daemon_json, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2) + "\n")
    if gpu:  # the agent names its NVIDIA runtime for GPU containers (HostConfig.Runtime), bypassing the default
        lines = []
        if os.path.exists(ecs_config):
            with open(ecs_config, encoding="utf-8") as handle:
                lines = [line for line in handle.read().splitlines() if not line.startswith("ECS_NVIDIA_RUNTIME=")]
        os.makedirs(os.path.dirname(ecs_config), exist_ok=True)
        with open(ecs_config, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines + ["ECS_NVIDIA_RUNTIME=c2d-nvidia"]) + "\n")


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--c2d-configure"] and len(argv) == 4:
        configure_docker(argv[2], argv[3], gpu=find_runtime(NEXT_RUNTIMES["c2d-nvidia"]) is not None)
        return 0
    args = argv[1:]
    call = None
    try:
        name = os.path.basename(argv[0])
        if name not in NEXT_RUNTIMES:
            raise Refused(f"run as {name!r}: expected one of {', '.join(NEXT_RUNTIMES)}")
        runtime = find_runtime(NEXT_RUNTIMES[name])
        if runtime is None:
            raise Refused(f"{NEXT_RUNTIMES[name]} not found in {':'.join(SEARCH_PATH)}")
        try:
            call = Invocation(args)
        except Unparsable as error:
            if set(args) & set(SPEC_COMMANDS):
                raise Refused(str(error)) from None
            os.execv(runtime, [runtime, *args])  # runc itself rejects what it does not know
        done = prepare(call)
        if done:
            journal(6, f"{call.command} {call.container_id}: {done}")  # LOG_INFO
        os.execv(runtime, [runtime, *args])
    except Refused as error:
        return refuse(call, str(error))
    except Exception as error:  # noqa: BLE001 - fail closed: whatever went wrong, nothing starts unchanged
        return refuse(call, f"{type(error).__name__}: {error}")
    return 1  # not reached: execv replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
