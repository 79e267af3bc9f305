"""The canary's probe: an algorithm that tries every way out of a sealed job and writes what held.

`make canary` starts it through the provider's own start path as a raw algorithm (this file is
its `rawcode`, run by `python $ALGO` in a stock image such as python:3.13-slim), with its part
in `algoCustomData` (`{"c2dCanary": {...}}`, canary/plan.py). It is one file because it is the
algorithm, and it needs only the standard library of Python >= 3.9.

It writes `outputs/canary.json` (every check: PASS, FAIL or SKIP with the reason; and the facts
the canary compares across jobs: boot id, listening window, which peer it reached) and
`outputs/canary.txt` (the table, also printed to the algorithm's log). Its own exit code is 0
whatever it found: the job must complete and publish for the canary to read the verdict.

What "held" means. `where` is "aws" (a Batch job) or "local" (the sandbox of `make run`).
A target that exists on AWS only (instance metadata, the ECS credential endpoint, the agent's
ports) cannot prove anything on a machine that has none: there it is FAIL if reached, else
SKIP with the reason. On AWS a packet to an address off the instance must be stopped on the
instance: ENETUNREACH (the sealed algorithm's own network namespace, first wall) or EPERM (the
owner-match rules, second wall); a timeout or a refusal means it left, and that is a FAIL too.
Nothing it tries changes anything: writes are tried with O_CREAT|O_EXCL on a fresh name that is
removed at once, or by opening an existing file for appending without writing to it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time

DATA = os.environ.get("DATA_DIR") or "/data"  # /data in a job; the job folder where a local job runs unsandboxed
OUTPUTS = DATA + "/outputs"
CONFIG = DATA + "/inputs/algoCustomData.json"
CONNECT_SECONDS = 2.0
BLOCKED_ON_INSTANCE = {errno.ENETUNREACH: "no route (own network namespace)",
                       errno.EPERM: "a firewall rule (owner-match rules)", errno.EACCES: "a firewall rule (owner-match rules)"}
NEUTRAL = -1  # a failed name lookup: no errno says where the query stopped
IMDS, ECS_ENDPOINT = "169.254.169.254", "169.254.170.2"
AGENT_PORTS = (51678, 51679, 51680)
PUBLIC_TARGETS = (("1.1.1.1", 443), ("8.8.8.8", 443), ("9.9.9.9", 443))
PUBLIC_NAME = "example.com"
PRIVATE_TARGETS = (("10.0.0.1", 80), ("172.16.0.1", 80), ("172.31.0.1", 443), ("192.168.0.1", 80), ("100.64.0.1", 80))
CREDENTIAL_NAMES = ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_ROLE_ARN", "ECS_CONTAINER_METADATA_URI", "ECS_CONTAINER_METADATA_URI_V4")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PRIVATE|CREDENTIAL|TOKEN|ACCESS_KEY", re.I)
# AWS access key ids, 0x-hex private keys (not the 64 hex digits of a did), PEM keys
SECRET_VALUE = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|\b0x[0-9a-fA-F]{64}\b|-----BEGIN")
# canary/Dockerfile's image: a python copy given cap_setuid,cap_setgid+p that runs canary/escalate.py
# as the image's ENTRYPOINT and HEALTHCHECK; each run appends what it got to a marker in outputs/.
CANARY_CAPPED = "/usr/local/bin/c2d-canary-capped"
CANARY_ESCALATE = "/usr/local/lib/c2d-canary/escalate.py"
MARKERS = {"file_caps.entrypoint": (OUTPUTS + "/.c2d-entrypoint", "ENTRYPOINT"),
           "file_caps.healthcheck": (OUTPUTS + "/.c2d-healthcheck", "HEALTHCHECK")}
SCAN_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt")
SCAN_LIMIT, SCAN_SECONDS = 300_000, 20.0
CAPABILITY_NAMES = (
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable net_bind_service "
    "net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct "
    "sys_admin sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write audit_control setfcap "
    "mac_override mac_admin syslog wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore").split()


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, check: str, status: str, detail: str) -> None:
        self.rows.append({"check": check, "status": status, "detail": " ".join(detail.split())[:400]})

    def guarded(self, check: str, action) -> None:
        """Run one check; a probe that crashes has proven nothing, so that is a FAIL with the reason."""
        try:
            action()
        except Exception as error:  # noqa: BLE001 - reported, not raised: the other checks still run
            self.add(check, "FAIL", f"the check itself crashed: {type(error).__name__}: {error}")


# -- network primitives ------------------------------------------------------------------------

def connect(host: str, port: int, request: bytes = b"", seconds: float = CONNECT_SECONDS) -> tuple[bool, str, int]:
    """(connected, what happened, errno). With `request`, sends it and reads the first line."""
    try:
        sock = socket.create_connection((host, port), timeout=seconds)
    except OSError as error:
        code = error.errno or (errno.ETIMEDOUT if isinstance(error, socket.timeout) else 0)
        return False, errno.errorcode.get(code, type(error).__name__), code
    with sock:
        if not request:
            return True, "connected", 0
        try:
            sock.sendall(request)
            first = sock.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError as error:
            return True, f"connected, then {type(error).__name__}", 0
        return True, f"connected, answered {first[:60]!r}", 0


def http(method: str, path: str, host: str, headers: str = "") -> bytes:
    return f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n{headers}\r\n".encode()


def attempt_all(attempts: list[tuple[str, object]]) -> list[tuple[str, tuple[bool, str, int]]]:
    """Run (label, zero-argument callable) attempts at once: a wall that lets packets through
    silently costs a timeout each, and there are many."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(attempts))) as pool:
        futures = [(label, pool.submit(action)) for label, action in attempts]
        return [(label, future.result()) for label, future in futures]


def describe(results: list[tuple[str, tuple[bool, str, int]]]) -> str:
    return "; ".join(f"{target}: {what}" for target, (_, what, _) in results)


def judge_remote(report: Report, check: str, where: str, results: list[tuple[str, tuple[bool, str, int]]],
                 aws_only: bool) -> None:
    """Targets off the machine. Any connection is a FAIL. So is any error but ENETUNREACH (the
    sealed algorithm's own network namespace has no route) or EPERM (a firewall rule on this host:
    on an instance, the owner-match rules): anything else (a timeout, a refusal) means the packet
    left. An AWS-only target that is not reached on a local machine proves nothing: SKIP."""
    text = describe(results)
    if any(connected for _, (connected, _, _) in results):
        report.add(check, "FAIL", "reached: " + text)
    elif where == "local" and aws_only:
        report.add(check, "SKIP", "no such endpoint on a local machine, so not reaching it proves nothing (" + text + ")")
    elif any(code not in BLOCKED_ON_INSTANCE and code != NEUTRAL for _, (_, _, code) in results):
        report.add(check, "FAIL", "not stopped on this host (the packet left): " + text)
    else:
        walls = sorted({BLOCKED_ON_INSTANCE[code] for _, (_, _, code) in results if code in BLOCKED_ON_INSTANCE})
        report.add(check, "PASS", f"held by {' and '.join(walls)}: {text}")


def judge_local(report: Report, check: str, results: list[tuple[str, tuple[bool, str, int]]], none_reason: str) -> None:
    """Targets on the same machine (loopback listeners, abstract sockets)."""
    if not results:
        report.add(check, "SKIP", none_reason)
        return
    text = "; ".join(f"{target}: {what}" for target, (_, what, _) in results)
    reached = [target for target, (connected, _, _) in results if connected]
    report.add(check, "FAIL" if reached else "PASS", ("reached: " if reached else "") + text)


def abstract_connect(name: str, hello: bytes = b"") -> tuple[bool, str, int]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_SECONDS)
    try:
        sock.connect("\0" + name)
        if hello:
            sock.sendall(hello)
            return True, "connected, answered " + repr(sock.recv(200).decode("latin-1").strip()[:60]), 0
        return True, "connected", 0
    except OSError as error:
        return False, errno.errorcode.get(error.errno or 0, type(error).__name__), error.errno or 0
    finally:
        sock.close()


# -- identity, capabilities ---------------------------------------------------------------------

def status_fields() -> dict[str, str]:
    with open("/proc/self/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def capability_text(mask: int) -> str:
    names = [CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else str(bit) for bit in range(64) if mask >> bit & 1]
    return f"{mask:#x}" + (f" ({','.join(names[:6])}{',...' if len(names) > 6 else ''})" if names else "")


def check_identity(report: Report, expected_uid: int) -> None:
    fields = status_fields()
    uids, gids = [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]
    groups = os.getgroups()
    ids = f"uid={uids} gid={gids} groups={groups}"
    report.add("identity.uid", "PASS" if set(uids) == {expected_uid} else "FAIL",
               f"{ids}, expected {expected_uid}")
    report.add("identity.groups", "PASS" if 0 not in gids + groups and set(groups) <= {gids[0]} else "FAIL",
               f"{ids}: no root group, no group but its own")
    outcomes = []
    for name, call in (("setgid(0)", os.setgid), ("setuid(0)", os.setuid)):
        try:
            call(0)
            outcomes.append((name, True, "succeeded"))
        except OSError as error:
            outcomes.append((name, False, errno.errorcode.get(error.errno or 0, "error")))
    report.add("identity.setuid", "FAIL" if any(ok for _, ok, _ in outcomes) else "PASS",
               "; ".join(f"{name}: {what}" for name, _, what in outcomes))


def check_capabilities(report: Report) -> dict[str, int]:
    fields = status_fields()
    masks = {name: int(fields.get(name, "0"), 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    for check, names in (("caps.effective", ("CapEff",)), ("caps.permitted", ("CapPrm",)), ("caps.bounding", ("CapBnd",)),
                         ("caps.inheritable_ambient", ("CapInh", "CapAmb"))):
        held = any(masks[name] for name in names)
        report.add(check, "FAIL" if held else "PASS", "; ".join(f"{n} {capability_text(masks[n])}" for n in names))
    report.add("no_new_privs", "PASS" if fields.get("NoNewPrivs", "0").strip() == "1" else "FAIL",
               f"NoNewPrivs {fields.get('NoNewPrivs', '?').strip()} (with 1, setuid bits and file capabilities grant "
               "nothing on exec)")
    return masks


def check_setfcap(report: Report) -> None:
    """Giving a file a capability needs CAP_SETFCAP: the algorithm must not be able to make its own
    file-capped binary (a version-2 xattr: effective, cap_setuid + cap_setgid permitted)."""
    value = (0x02000001).to_bytes(4, "little") + (0xC0).to_bytes(4, "little") + bytes(12)
    tried = []
    for folder in ("/tmp", OUTPUTS):
        path = os.path.join(folder, f".c2d-canary-fcap-{os.getpid()}")
        try:
            with open(path, "xb"):
                pass
        except OSError as error:
            tried.append(f"{folder}: cannot create ({errno.errorcode.get(error.errno or 0)})")
            continue
        try:
            os.setxattr(path, "security.capability", value)
            report.add("file_caps.setfcap", "FAIL", f"set cap_setuid,cap_setgid+ep on a file in {folder}")
            return
        except OSError as error:
            code = error.errno or 0
            tried.append(f"{folder}: {errno.errorcode.get(code, 'error')}")
            if code in (errno.EPERM, errno.EACCES):
                report.add("file_caps.setfcap", "PASS", f"setxattr security.capability refused: {tried[-1]}")
                return
        finally:
            os.unlink(path)
    report.add("file_caps.setfcap", "SKIP", "no file system here takes a capability xattr: " + "; ".join(tried))


def find_capped(limit: int = SCAN_LIMIT, seconds: float = SCAN_SECONDS) -> tuple[list[str], int]:
    """Regular executable files carrying file capabilities in the image (a bounded walk)."""
    found, seen, deadline, walked = [], 0, time.monotonic() + seconds, []
    for root in SCAN_ROOTS:
        real = os.path.realpath(root)
        if any(real == done or real.startswith(done + "/") for done in walked):
            continue  # /lib -> usr/lib on a merged-/usr system
        walked.append(real)
        for folder, dirs, files in os.walk(real):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                seen += 1
                if seen > limit or time.monotonic() > deadline:
                    return found, seen
                path = os.path.join(folder, name)
                try:
                    mode = os.lstat(path).st_mode
                    if stat.S_ISREG(mode) and mode & 0o111 and os.getxattr(path, "security.capability", follow_symlinks=False):
                        found.append(path)
                except OSError:
                    continue
    return found, seen


def exec_capped(path: str) -> tuple[str, str]:
    """Exec one file-capped binary as the algorithm: (PASS|FAIL, what happened). The kernel
    refuses (EPERM) a binary whose file capabilities it cannot grant; if it runs, what it holds
    is read from its /proc status once the exec is done (its name changed)."""
    if path == CANARY_CAPPED and os.path.isfile(CANARY_ESCALATE):
        try:
            done = subprocess.run([path, CANARY_ESCALATE, "--report"], capture_output=True, text=True, timeout=20)
        except OSError as error:
            return ("PASS" if error.errno in (errno.EPERM, errno.EACCES) else "FAIL",
                    f"exec refused: {errno.errorcode.get(error.errno or 0, type(error).__name__)}")
        line = done.stdout.strip() or done.stderr.strip()[-160:]
        return ("PASS" if line.endswith("gained=no") else "FAIL"), f"ran: {line}"
    try:
        child = subprocess.Popen([path, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as error:
        return ("PASS" if error.errno in (errno.EPERM, errno.EACCES) else "FAIL",
                f"exec refused: {errno.errorcode.get(error.errno or 0, type(error).__name__)}")
    try:
        deadline, fields = time.monotonic() + 2, {}
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{child.pid}/status") as handle:
                    fields = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
            except OSError:
                break
            if fields.get("Name", "") == os.path.basename(path)[:15]:
                break
            time.sleep(0.001)
        if fields.get("Name", "") != os.path.basename(path)[:15]:
            return "FAIL", "exec succeeded and what it holds could not be read"
        uid, held = fields["Uid"].split(), int(fields["CapEff"], 16) | int(fields["CapPrm"], 16)
        gained = held or set(uid) != {str(os.getuid())}
        return ("FAIL" if gained else "PASS"), f"exec ran it with uid {uid[1]} CapEff {fields['CapEff']} CapPrm {fields['CapPrm']}"
    finally:
        child.kill()
        child.wait()


def check_file_caps(report: Report) -> None:
    found, seen = find_capped()
    if os.path.isfile(CANARY_CAPPED) and CANARY_CAPPED not in found:
        found.insert(0, CANARY_CAPPED)
    if not found:
        report.add("file_caps.exec", "SKIP", f"the image ships no file-capped binary ({seen} files looked at); "
                   "CapBnd and no_new_privs above decide; canary/Dockerfile's image ships one to try for real")
        return
    results = [(path, *exec_capped(path)) for path in found[:4]]
    failed = [r for r in results if r[1] == "FAIL"]
    report.add("file_caps.exec", "FAIL" if failed else "PASS", "; ".join(f"{p}: {what}" for p, _, what in results))


def check_image_markers(report: Report, where: str) -> None:
    """What canary/Dockerfile's ENTRYPOINT and HEALTHCHECK got from their file-capped python."""
    for check, (path, what) in MARKERS.items():
        if where == "local":
            report.add(check, "SKIP", f"no image {what} here: local jobs use no image")
            continue
        if not os.path.isfile(CANARY_ESCALATE):
            report.add(check, "SKIP", f"the image has no file-capped {what}: canary/Dockerfile's image has one")
            continue
        try:
            with open(path) as handle:
                lines = [line.strip() for line in handle if line.startswith("c2d-canary escalate")]
        except OSError:
            lines = []
        if not lines:
            report.add(check, "SKIP", f"the image's {what} left no marker while the probe ran")
        else:
            gained = [line for line in lines if not line.endswith("gained=no")]
            report.add(check, "FAIL" if gained else "PASS", f"{len(lines)} run(s): " + (gained or lines)[0])


def check_gpus(report: Report, gpus: int, where: str) -> None:
    """A GPU environment's job must still get its GPU through the runtime chain (c2d-nvidia ->
    nvidia-container-runtime -> runc) that takes its capabilities and network away."""
    if not gpus:
        return
    if where == "local":
        report.add("gpu.devices", "SKIP", "local jobs get no GPU")
        return
    devices = sorted(name for name in os.listdir("/dev") if name.startswith("nvidia"))
    cards = [name for name in devices if name[len("nvidia"):].isdigit()]
    ok = len(cards) >= gpus and "nvidiactl" in devices
    report.add("gpu.devices", "PASS" if ok else "FAIL", f"{gpus} GPU(s) expected; /dev has {devices or 'no nvidia device'}")


# -- the network ---------------------------------------------------------------------------------

def interfaces() -> list[str]:
    with open("/proc/net/dev") as handle:
        return [line.split(":", 1)[0].strip() for line in handle.readlines()[2:]]


def check_network(report: Report, mode: str, where: str, decoys: dict) -> None:
    names = interfaces()
    if mode == "sealed":
        report.add("net.interfaces", "PASS" if names == ["lo"] else "FAIL", f"sees {names}; a sealed job sees only lo")
    else:
        report.add("net.interfaces", "SKIP", f"sees {names}: a network-allowed job keeps the instance's network by design")

    uri = os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    credentials = uri or "/v2/credentials/00000000-0000-0000-0000-000000000000"
    outside = [tuple(item.rsplit(":", 1)) for item in decoys.get("outside", [])]
    groups: dict[str, list[tuple[str, object]]] = {
        "imds.v1": [(f"{IMDS}:80 GET credentials", lambda: connect(IMDS, 80, http(
            "GET", "/latest/meta-data/iam/security-credentials/", IMDS))),
            ("[fd00:ec2::254]:80 GET credentials", lambda: connect("fd00:ec2::254", 80, http(
                "GET", "/latest/meta-data/iam/security-credentials/", "[fd00:ec2::254]")))],
        "imds.v2_token": [(f"{IMDS}:80 PUT token", lambda: connect(IMDS, 80, http(
            "PUT", "/latest/api/token", IMDS, "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n")))],
        "ecs.credentials_uri": [(f"{ECS_ENDPOINT}:80 GET " + ("$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" if uri else
                                 "a guessed URI (the variable is not set here)"),
                                 lambda: connect(ECS_ENDPOINT, 80, http("GET", credentials, ECS_ENDPOINT)))],
        "ecs.metadata": [(f"{ECS_ENDPOINT}:80 GET {p}", lambda p=p: connect(ECS_ENDPOINT, 80, http("GET", p, ECS_ENDPOINT)))
                         for p in ("/v2/metadata", "/v4/")],
        "ecs.agent_ports": [(f"127.0.0.1:{port}", lambda port=port: connect("127.0.0.1", port)) for port in AGENT_PORTS],
        "net.internet": [(f"{h}:{p}", lambda h=h, p=p: connect(h, int(p))) for h, p in outside + list(PUBLIC_TARGETS)]
                        + [(f"DNS {PUBLIC_NAME}", resolve)],
        "net.private_ranges": [(f"{h}:{p}", lambda h=h, p=p: connect(h, p)) for h, p in PRIVATE_TARGETS + tuple(_gateways())],
    }
    if where == "local":
        groups["net.host_loopback"] = (
            [(f"host 127.0.0.1:{port}", lambda port=port: connect("127.0.0.1", int(port))) for port in decoys.get("loopback", [])]
            + [(f"host abstract @{name}", lambda name=name: abstract_connect(name)) for name in decoys.get("abstract", [])])
    else:  # the instance's sshd and, for a sealed job, the DNS stub resolver (4001 may ask it by design)
        targets = [("127.0.0.1", 22)] + ([("127.0.0.53", 53)] if mode == "sealed" else [])
        groups["net.host_loopback"] = [(f"{h}:{p}", lambda h=h, p=p: connect(h, p)) for h, p in targets]
    flat = attempt_all([(f"{check}|{label}", action) for check, attempts in groups.items() for label, action in attempts])
    results = {check: [(label.split("|", 1)[1], outcome) for label, outcome in flat if label.startswith(check + "|")]
               for check in groups}

    for check in ("imds.v1", "imds.v2_token", "ecs.credentials_uri", "ecs.metadata"):
        judge_remote(report, check, where, results[check], aws_only=True)
    agent = results["ecs.agent_ports"]
    if where == "local" and not any(ok for _, (ok, _, _) in agent):
        report.add("ecs.agent_ports", "SKIP", "no ECS agent on a local machine: " + describe(agent))
    else:
        judge_local(report, "ecs.agent_ports", agent, "")
    judge_local(report, "net.host_loopback", results["net.host_loopback"], "no listener of the host was planted")

    public = results["net.internet"]
    if mode == "network":
        reached = [target for target, (ok, _, _) in public if ok]
        report.add("net.internet", "PASS" if reached else "FAIL", ("reached " + ", ".join(reached)) if reached else
                   "a network-allowed job reached nothing outside: " + describe(public))
    elif where == "local" and not outside and not any(ok for _, (ok, _, _) in public):
        report.add("net.internet", "SKIP", "no stand-in outside host was planted and this machine may have no internet: "
                   + describe(public))
    else:
        judge_remote(report, "net.internet", where, public, aws_only=False)
    judge_remote(report, "net.private_ranges", where, results["net.private_ranges"], aws_only=False)


def resolve() -> tuple[bool, str, int]:
    """A name resolved is a DNS query that left the job (and data can ride in one)."""
    try:
        found = socket.getaddrinfo(PUBLIC_NAME, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        # no resolver reachable: the sealed namespace has no route to any (EAI_AGAIN / EAI_NONAME)
        return False, f"not resolved ({error.strerror})", NEUTRAL
    return True, f"resolved to {found[0][4][0]}", 0


def _gateways() -> list[tuple[str, int]]:
    """The default gateway of the namespace, if it has one (the VPC router on an instance)."""
    found = []
    try:
        with open("/proc/net/route") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[1] == "00000000" and fields[2] != "00000000":
                    found.append((socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little")), 80))
    except OSError:
        pass
    return found


# -- other jobs ----------------------------------------------------------------------------------

class Peers:
    """Listens on a loopback port and an abstract socket named for this job, and keeps trying
    every other probe job's for the whole window; records who reached whom, both ways."""

    def __init__(self, config: dict) -> None:
        self.run, self.role = config["run"], config["role"]
        self.listen, self.peers = config["listen"], config.get("peers", [])
        self.window = float(config.get("window", 30))
        self.reached: dict[str, list[str]] = {}
        self.heard: dict[str, list[str]] = {}
        self.self_test: dict[str, str] = {}
        self.port = 0
        self.started = self.ended = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def hello(self) -> bytes:
        return f"c2d-canary {self.run} {self.role}\n".encode()

    def start(self) -> None:
        tcp = self._bind_tcp()
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind("\0" + self.listen["abstract"])
        for kind, sock in (("tcp", tcp), ("abstract", unix)):
            sock.listen(16)
            sock.settimeout(0.5)
            threading.Thread(target=self._serve, args=(kind, sock), daemon=True).start()
        self.started = time.time()
        own = {"tcp": connect("127.0.0.1", self.port, self.hello()),
               "abstract": abstract_connect(self.listen["abstract"], self.hello())}
        self.self_test = {kind: what for kind, (_, what, _) in own.items()}
        self._trier = threading.Thread(target=self._try_peers, daemon=True)
        self._trier.start()

    def _bind_tcp(self) -> socket.socket:
        """The first of its candidate ports that is free (a network-allowed job shares the
        instance's loopback, where any of them may be taken); the peers try every candidate."""
        for port in self.listen["ports"]:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind(("127.0.0.1", int(port)))
            except OSError:
                tcp.close()
                continue
            self.port = int(port)
            return tcp
        raise OSError(f"every candidate port is taken: {self.listen['ports']}")

    def _serve(self, kind: str, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    words = conn.recv(200).decode("latin-1").split()
                    conn.sendall(self.hello())
                except OSError:
                    words = []
                who = words[2] if len(words) == 3 and words[:2] == ["c2d-canary", self.run] else "unknown"
                if who != self.role:
                    with self._lock:
                        kinds = self.heard.setdefault(who, [])
                        if kind not in kinds:
                            kinds.append(kind)

    def _attempt(self, peer: dict, kind: str) -> bool:
        expected = f"c2d-canary {self.run} {peer['role']}"
        if kind == "abstract":
            connected, what, _ = abstract_connect(peer["abstract"], self.hello())
            return connected and expected in what
        for port in peer["ports"]:
            connected, what, _ = connect("127.0.0.1", int(port), self.hello(), seconds=1)
            if connected and expected in what:
                return True
        return False

    def _try_peers(self) -> None:
        while time.time() < self.started + self.window and not self._stop.is_set():
            for peer in self.peers:
                for kind in ("tcp", "abstract"):
                    if kind not in self.reached.get(peer["role"], []) and self._attempt(peer, kind):
                        with self._lock:
                            self.reached.setdefault(peer["role"], []).append(kind)
            time.sleep(0.5)

    def finish(self) -> dict:
        self._trier.join()
        self.ended = time.time()
        self._stop.set()
        return {"started": self.started, "ended": self.ended, "reached": self.reached, "heard": self.heard,
                "selfTest": self.self_test, "listen": {**self.listen, "port": self.port}}


# -- processes, files, environment ------------------------------------------------------------

def check_processes(report: Report) -> None:
    """Every visible process outside the algorithm's own session (its own shell and children):
    none may show its environment, working directory or root. PID 1 always counts: on Batch it
    is the container's script, whose environment held the task role's credential URI."""
    me, session, readable, seen = os.getpid(), os.getsid(0), [], 0
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid == me:
            continue
        seen += 1
        try:
            if pid != 1 and os.getsid(pid) == session:
                continue
        except OSError:
            pass
        for what in ("environ", "cwd", "root"):
            try:
                if what == "environ":
                    with open(f"/proc/{pid}/environ", "rb") as handle:
                        handle.read(1)
                else:
                    os.readlink(f"/proc/{pid}/{what}")
                readable.append(f"{pid}/{what}")
            except OSError:
                pass
    report.add("proc.other_processes", "FAIL" if readable else "PASS",
               (f"readable: {', '.join(readable[:12])}" if readable else "none readable") + f" ({seen} other processes visible)")


def _writable_dir(folder: str) -> bool:
    path = os.path.join(folder, f".c2d-canary-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return False
    os.unlink(path)
    return True


def _writable_file(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW))
        return True
    except OSError:
        return False


def check_files(report: Report) -> None:
    inputs = [os.path.join(folder, name) for folder, _, names in os.walk(DATA + "/inputs") for name in names]
    input_dirs = [folder for folder, _, _ in os.walk(DATA + "/inputs")]
    groups = {
        "fs.inputs": (input_dirs, inputs),
        "fs.transformations": ([folder for folder, _, _ in os.walk(DATA + "/transformations")],
                               [os.path.join(f, n) for f, _, ns in os.walk(DATA + "/transformations") for n in ns]),
        "fs.logs": ([DATA + "/logs"], [os.path.join(DATA, "logs", n) for n in sorted(os.listdir(DATA + "/logs"))
                                       if n != "algorithm.log"]),
        "fs.data": ([DATA] + ([DATA + "/.c2d"] if os.path.isdir(DATA + "/.c2d") else []), []),
        "fs.system": (["/", "/etc", "/usr", "/usr/local/bin", "/root", "/var"], []),
    }
    for check, (folders, files) in groups.items():
        written = [f for f in folders if os.path.isdir(f) and _writable_dir(f)] + [f for f in files if _writable_file(f)]
        report.add(check, "FAIL" if written else "PASS",
                   f"writable: {', '.join(written[:8])}" if written else f"{len(folders)} folders, {len(files)} files: none writable")
    own = [("outputs/", _writable_dir(OUTPUTS)), ("logs/algorithm.log (append)", _writable_file(DATA + "/logs/algorithm.log"))]
    report.add("fs.own_outputs_and_log", "PASS" if all(ok for _, ok in own) else "FAIL",
               "; ".join(f"{name}: {'writable' if ok else 'NOT writable'}" for name, ok in own))


def check_environment(report: Report) -> None:
    names = sorted(os.environ)
    bad = [n for n in names if n in CREDENTIAL_NAMES or SECRET_NAME.search(n)]
    bad += [n for n in names if n not in bad and SECRET_VALUE.search(os.environ[n])]
    report.add("env.credentials", "FAIL" if bad else "PASS",
               f"credential-like variables: {', '.join(bad)}" if bad else f"none among {len(names)} variables ({', '.join(names[:20])})")


# -- main ----------------------------------------------------------------------------------------

def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def table(rows: list[dict[str, str]]) -> str:
    width = max([len(r["check"]) for r in rows] + [5])
    return "\n".join(f"{r['status']:<4}  {r['check']:<{width}}  {r['detail']}" for r in rows) + "\n"


def main() -> int:
    with open(CONFIG) as handle:
        config = json.load(handle)["c2dCanary"]
    mode, where = config["mode"], config["where"]
    print(f"c2d-canary probe {config['role']} started ({mode}, {where})", flush=True)  # for computeStreamableLogs
    expected_uid = 4001 if mode == "network" else 4000
    report = Report()
    peers = Peers(config)
    report.guarded("jobs.listen", peers.start)
    report.guarded("identity", lambda: check_identity(report, expected_uid))
    report.guarded("caps", lambda: check_capabilities(report))
    report.guarded("file_caps.setfcap", lambda: check_setfcap(report))
    report.guarded("file_caps.exec", lambda: check_file_caps(report))
    report.guarded("gpu.devices", lambda: check_gpus(report, int(config.get("gpus") or 0), where))
    report.guarded("net", lambda: check_network(report, mode, where, config.get("decoys", {})))
    report.guarded("proc.other_processes", lambda: check_processes(report))
    report.guarded("fs", lambda: check_files(report))
    report.guarded("env.credentials", lambda: check_environment(report))
    facts = {"peers": peers.finish() if peers.started else {}}
    report.guarded("file_caps.markers", lambda: check_image_markers(report, where))
    facts.update({"bootId": boot_id(), "uid": os.getuid(), "python": sys.version.split()[0]})
    result = {"version": 1, "run": config["run"], "role": config["role"], "mode": mode, "where": where,
              "rows": report.rows, "facts": facts}
    with open(os.path.join(OUTPUTS, "canary.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    text = table(report.rows)
    with open(os.path.join(OUTPUTS, "canary.txt"), "w") as handle:
        handle.write(text)
    print(text, end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
