"""The Batch instances' network rules for the algorithm's UIDs, in one place.

ECS-on-EC2 Batch jobs run with host networking (AWS Batch user guide, "Networking modes for AWS
Batch jobs": `networkMode` cannot be set for EC2 jobs), and ECS gives the task role to every
container of a task: the algorithm's container receives `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
like the runner's, and its image's ENTRYPOINT runs before our command can unset anything. What
keeps credentials from the algorithm is therefore the instance, not the container: the algorithm
always runs as UID 4000 (no network) or 4001 (every dataset allows network access; C1), and these
iptables rules, matched on the sending socket's owner, decide what those UIDs may reach:

- Both UIDs: nothing in 169.254.0.0/16, matched on the connection's ORIGINAL destination. That is
  the instance metadata service (169.254.169.254, the instance role) and the ECS credential and
  task metadata endpoint 169.254.170.2, which the ECS agent's own nat rule REDIRECTs to
  127.0.0.1:51679 before the filter table sees the packet (ecs-init: `iptables -t nat -A OUTPUT
  -d 169.254.170.2 -p tcp --dport 80 -j REDIRECT --to-ports 51679`), hence `--ctorigdst`. The
  agent's ports on loopback (51678 introspection, 51679 credentials, 51680) are refused as well.
- Loopback: TCP only, to unprivileged ports, and a loopback connection opened by one of the UIDs
  may only be answered by that UID (connmark set at the first packet, checked on every reply).
  So an algorithm can talk to its own processes over localhost, but not to root's services (the
  systemd-resolved stub at 127.0.0.53 would carry data out in DNS queries; the ECS agent), nor to
  a network-allowed algorithm of another job on the same instance (jobs share instances), which
  could relay a sealed job's data to the internet. UDP and everything else on loopback are
  dropped (a datagram is delivered before any answer could be refused). TCP Fast Open is pinned
  to client-only (net.ipv4.tcp_fastopen=1), so no listener receives data in a SYN it never
  answered.
- UID 4000: no traffic other than that loopback TCP.
- UID 4001: the internet, but not the private and special ranges a host inside a VPC must not be
  used to reach (RFC 1918 10/8, 172.16/12, 192.168/16, CGNAT 100.64/10 which VPCs may use, this
  network 0/8, multicast 224/4, reserved 240/4, benchmarking 198.18/15, IETF 192.0.0/24): other
  instances, VPC endpoints, databases of the account. DNS (port 53) may go anywhere but link-local
  except the Amazon DNS server 169.254.169.253, and the loopback stub resolver answers it, so
  names resolve; a DNS server in a private range then hands out only addresses that are refused.
- IPv6: both UIDs get only the loopback TCP above (the IMDS IPv6 endpoint fd00:ec2::254 and the
  VPC's IPv6 neighbours included in what is refused); network-allowed jobs use IPv4.

Root (the runner containers, the ECS agent, Docker) is not affected. The rules are useless if
the algorithm can become root or hold a capability, and a hostile image can ship a setuid binary
or a file-capped one (Docker >= 24.0.6 gives a non-root container its default capabilities in the
permitted set, so no-new-privileges does not stop a file-capped ENTRYPOINT or HEALTHCHECK). So
the user data also makes Docker run every container through infra/oci_runtime.py (Docker's
default runtime `c2d-runc`, and `c2d-nvidia` as the ECS agent's NVIDIA runtime on GPU
instances), which gives a non-root container no capability at all and no_new_privs, a sealed
algorithm container a network namespace of its own (the first wall; these rules are the second),
and the runner's root containers only the capabilities they need; and sets Docker's daemon-wide
`"no-new-privileges": true` as well. Before the ECS agent starts, c2d-check-runtime makes sure
Docker really uses that runtime: if not, the agent does not start and the instance runs no job.

The rules are loaded by a systemd unit before Docker and the ECS agent at every boot (iptables
rules do not survive a reboot), and the agent's unit requires it: an instance whose rules failed
to load starts no job.

`user_data()` is the launch templates' user data (MIME multi-part, as AWS Batch requires for
launch template user data); tests/infra checks that infra/resources.yaml embeds exactly it and
applies the rule files and loader it installs in network namespaces.
`python -m infra user-data` prints it.
"""
from __future__ import annotations

import base64
import gzip
import re
from pathlib import Path

from chalicelib.compute.job_placement import NETWORK_UID, SEALED_UID

RULES_DIR = "/etc/c2d"
APPLY_PATH = "/usr/local/sbin/c2d-algorithm-rules"
UNIT_NAME = "c2d-algorithm-rules.service"
V4_FILE, V6_FILE = "algorithm-rules.v4", "algorithm-rules.v6"
MARK_CHAIN, FILTER_CHAIN = "C2D-MARK", "C2D-ALGO"
MARK_MASK = "0xffff"
ECS_AGENT_PORTS = "51678:51680"  # introspection, credentials (169.254.170.2 is redirected here), metrics
AMAZON_DNS = "169.254.169.253"
PRIVATE_RANGES = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.0.0.0/24",
                  "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4")
BOUNDARY = "==C2D-BOUNDARY=="


def _uid_chain(uid: int) -> str:
    return f"C2D-UID-{uid}"


def _mark(uid: int) -> str:
    return f"{hex(uid)}/{MARK_MASK}"


def _mangle() -> list[str]:
    """Remember which algorithm UID opened each connection (its connmark)."""
    lines = ["*mangle", f":{MARK_CHAIN} - [0:0]", f"-I OUTPUT 1 -j {MARK_CHAIN}"]
    for uid in (SEALED_UID, NETWORK_UID):
        lines.append(f"-A {MARK_CHAIN} -m owner --uid-owner {uid} -m conntrack --ctstate NEW "
                     f"-j CONNMARK --set-xmark {_mark(uid)}")
    return [*lines, "COMMIT"]


def _loopback(uid: int, chain: str, *, dns: bool) -> list[str]:
    """What `uid` may send on loopback: TCP to unprivileged ports that are not the ECS agent's;
    with `dns`, also the stub resolver."""
    lines = []
    if dns:
        lines += [f"-A {chain} -o lo -p udp --dport 53 -j RETURN", f"-A {chain} -o lo -p tcp --dport 53 -j RETURN"]
    return lines + [
        f"-A {chain} -o lo -p tcp --dport {ECS_AGENT_PORTS} -j DROP",
        f"-A {chain} -o lo -p tcp --dport 0:1023 -j DROP",
        f"-A {chain} -o lo -p tcp -j RETURN",
        f"-A {chain} -o lo -j DROP",
    ]


def _filter(ipv6: bool) -> list[str]:
    sealed, networked = _uid_chain(SEALED_UID), _uid_chain(NETWORK_UID)
    lines = ["*filter", f":{FILTER_CHAIN} - [0:0]", f":{sealed} - [0:0]", f":{networked} - [0:0]",
             f"-I OUTPUT 1 -j {FILTER_CHAIN}"]
    for uid in (SEALED_UID, NETWORK_UID):
        if uid == NETWORK_UID and not ipv6:  # the stub resolver answers 4001's DNS queries
            lines += [f"-A {FILTER_CHAIN} -o lo -p udp --sport 53 -m connmark --mark {_mark(uid)} -j RETURN",
                      f"-A {FILTER_CHAIN} -o lo -p tcp --sport 53 -m connmark --mark {_mark(uid)} -j RETURN"]
        lines.append(f"-A {FILTER_CHAIN} -o lo -m connmark --mark {_mark(uid)} -m owner ! --uid-owner {uid} -j DROP")
    lines += [f"-A {FILTER_CHAIN} -m owner --uid-owner {SEALED_UID} -j {sealed}",
              f"-A {FILTER_CHAIN} -m owner --uid-owner {NETWORK_UID} -j {networked}"]
    if not ipv6:
        lines.append(f"-A {sealed} -m conntrack --ctorigdst 169.254.0.0/16 -j DROP")
    lines += _loopback(SEALED_UID, sealed, dns=False)
    lines.append(f"-A {sealed} -j DROP")
    if ipv6:
        lines += _loopback(NETWORK_UID, networked, dns=False)
        lines.append(f"-A {networked} -j DROP")
        return [*lines, "COMMIT"]
    lines += [f"-A {networked} -m conntrack --ctorigdst {AMAZON_DNS} -p udp --dport 53 -j RETURN",
              f"-A {networked} -m conntrack --ctorigdst {AMAZON_DNS} -p tcp --dport 53 -j RETURN",
              f"-A {networked} -m conntrack --ctorigdst 169.254.0.0/16 -j DROP"]
    lines += _loopback(NETWORK_UID, networked, dns=True)
    lines += [f"-A {networked} -p udp --dport 53 -j RETURN", f"-A {networked} -p tcp --dport 53 -j RETURN"]
    lines += [f"-A {networked} -d {cidr} -j DROP" for cidr in PRIVATE_RANGES]
    lines.append(f"-A {networked} -j RETURN")
    return [*lines, "COMMIT"]


def ipv4_rules() -> str:
    """The iptables-restore (--noflush) input for IPv4."""
    return "\n".join(["# C2D algorithm UIDs: generated by infra/network_rules.py", *_mangle(), *_filter(False)]) + "\n"


def ipv6_rules() -> str:
    """The ip6tables-restore (--noflush) input for IPv6."""
    return "\n".join(["# C2D algorithm UIDs: generated by infra/network_rules.py", *_mangle(), *_filter(True)]) + "\n"


def apply_script() -> str:
    """The root shell script that (re)loads the rules from a directory; idempotent, so the unit
    can run it at every boot and a second run replaces rather than duplicates."""
    return f"""#!/bin/sh
# Loads the network rules of the C2D algorithm UIDs {SEALED_UID}/{NETWORK_UID} (infra/network_rules.py).
set -eu
dir=${{1:-{RULES_DIR}}}
sysctl -q -w net.ipv4.tcp_fastopen=1
for table_chain in "mangle {MARK_CHAIN}" "filter {FILTER_CHAIN}"; do
  set -- $table_chain
  while iptables -w -t "$1" -D OUTPUT -j "$2" 2>/dev/null; do :; done
  while ip6tables -w -t "$1" -D OUTPUT -j "$2" 2>/dev/null; do :; done
done
iptables-restore -w --noflush < "$dir/{V4_FILE}"
if [ -e /proc/net/if_inet6 ]; then ip6tables-restore -w --noflush < "$dir/{V6_FILE}"; fi
"""


def _unit() -> str:
    return f"""[Unit]
Description=Network rules of the compute-to-data algorithm UIDs
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target docker.service ecs.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={APPLY_PATH} {RULES_DIR}

[Install]
WantedBy=multi-user.target
"""


# The OCI runtime every container of the instance runs through (infra/oci_runtime.py), by the
# names Docker knows it by, and the check that Docker really uses it.
RUNTIME_PATH = "/usr/local/libexec/c2d/oci-runtime"
RUNTIME_SOURCE = Path(__file__).with_name("oci_runtime.py")
RUNTIME_LINKS = {"c2d-runc": "/usr/local/sbin/c2d-runc", "c2d-nvidia": "/usr/local/sbin/c2d-nvidia"}
CHECK_PATH = "/usr/local/sbin/c2d-check-runtime"
DAEMON_JSON, ECS_CONFIG = "/etc/docker/daemon.json", "/etc/ecs/ecs.config"


def runtime_source() -> str:
    """infra/oci_runtime.py as the instances install it; it is stdlib-only and cannot import the
    dispatcher, so its algorithm UID is checked against the dispatcher's here."""
    source = RUNTIME_SOURCE.read_text()
    if f"\nSEALED_UID = {SEALED_UID}\n" not in source:
        raise ValueError(f"infra/oci_runtime.py must seal UID {SEALED_UID} (chalicelib.compute.dispatch.SEALED_UID)")
    return source


def check_script() -> str:
    """Run before the ECS agent at every boot: no agent (so no job) unless Docker's default
    runtime is the C2D runtime, which works, and, when the agent is told to use c2d-nvidia for
    GPU containers, Docker knows that runtime too."""
    return f"""#!/bin/sh
# The ECS agent starts only if Docker runs containers through the C2D runtime (infra/oci_runtime.py).
set -eu
{RUNTIME_LINKS["c2d-runc"]} --version >/dev/null
default=$(docker info --format '{{{{.DefaultRuntime}}}}')
if [ "$default" != c2d-runc ]; then
  echo "c2d: Docker's default runtime is '$default', not c2d-runc: this instance runs no job" >&2
  exit 1
fi
if grep -qx 'ECS_NVIDIA_RUNTIME=c2d-nvidia' {ECS_CONFIG} 2>/dev/null \\
   && ! docker info --format '{{{{json .Runtimes}}}}' | grep -q '"c2d-nvidia"'; then
  echo "c2d: Docker has no c2d-nvidia runtime for the agent's GPU containers: this instance runs no job" >&2
  exit 1
fi
"""


# The ECS agent (which starts every job's containers) needs the rules and the runtime: if the
# rules fail to load at a boot, or Docker does not use the runtime, it does not start and the
# instance runs no job (fail closed).
ECS_DROP_IN = f"/etc/systemd/system/ecs.service.d/10-{UNIT_NAME.removesuffix('.service')}.conf"
_ECS_REQUIRES = f"""[Unit]
Requires={UNIT_NAME} docker.service
After={UNIT_NAME} docker.service

[Service]
ExecStartPre={CHECK_PATH}
"""


def _heredoc(path: str, body: str, mode: str, tag: str) -> str:
    return f"cat > {path} <<'{tag}'\n{body}{tag}\nchmod {mode} {path}\n"


# EC2 limits user data to 16 KB before base64, and AWS Batch adds its own MIME part: the runtime
# (two thirds of the script as text) is installed gzip-compressed, base64-encoded.
USER_DATA_LIMIT = 16 * 1024


def _compressed(path: str, body: str, mode: str, tag: str) -> str:
    blob = base64.encodebytes(gzip.compress(body.encode(), compresslevel=9, mtime=0)).decode()
    return f"base64 -d <<'{tag}' | gunzip > {path}\n{blob}{tag}\nchmod {mode} {path}\n"


def boot_script() -> str:
    """The shell part of the user data: install rules, loader and unit; install the OCI runtime
    and make it Docker's (default and, on GPU instances, the agent's NVIDIA runtime) with
    daemon-wide no-new-privileges; make the ECS agent require the unit and check the runtime;
    load the rules now. cloud-init runs it before the ECS agent starts (ecs.service is ordered
    after cloud-final), and the agent requires the unit and the check at every boot, so no job
    runs without the rules or the runtime."""
    links = "".join(f"ln -sf {RUNTIME_PATH} {link}\n" for link in RUNTIME_LINKS.values())
    return "".join([
        "#!/bin/bash\n",
        "# Compute-to-data: the algorithm UIDs' network rules and the containers' OCI runtime (infra/network_rules.py).\n",
        "set -euo pipefail\n",
        f"install -d -m 0755 {RULES_DIR}\n",
        _heredoc(f"{RULES_DIR}/{V4_FILE}", ipv4_rules(), "0644", "C2D_EOF"),
        _heredoc(f"{RULES_DIR}/{V6_FILE}", ipv6_rules(), "0644", "C2D_EOF"),
        _heredoc(APPLY_PATH, apply_script(), "0755", "C2D_EOF"),
        _heredoc(f"/etc/systemd/system/{UNIT_NAME}", _unit(), "0644", "C2D_EOF"),
        f"install -d -m 0755 {RUNTIME_PATH.rsplit('/', 1)[0]}\n",
        _compressed(RUNTIME_PATH, runtime_source(), "0755", "C2D_EOF"),
        links,
        _heredoc(CHECK_PATH, check_script(), "0755", "C2D_EOF"),
        f"install -d -m 0755 {ECS_DROP_IN.rsplit('/', 1)[0]}\n",
        _heredoc(ECS_DROP_IN, _ECS_REQUIRES, "0644", "C2D_EOF"),
        "systemctl daemon-reload\n",
        f"systemctl enable --now {UNIT_NAME}\n",
        f"{RUNTIME_PATH} --c2d-configure {DAEMON_JSON} {ECS_CONFIG}\n",
        "systemctl try-restart docker\n",
    ])


def user_data() -> str:
    """The launch templates' user data: one text/x-shellscript part in a MIME multi-part archive
    (AWS Batch merges its own parts into it)."""
    return (f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{BOUNDARY}"\n\n'
            f'--{BOUNDARY}\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n'
            f"{boot_script()}\n--{BOUNDARY}--\n")


def write_rules(directory: Path) -> Path:
    """The rule files and the loader as the boot script installs them, under `directory`;
    returns the loader's path (for tests that apply them in a network namespace)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / V4_FILE).write_text(ipv4_rules())
    (directory / V6_FILE).write_text(ipv6_rules())
    loader = directory / "apply"
    loader.write_text(apply_script())
    loader.chmod(0o755)
    return loader


_EMBEDDED = re.compile(r"(?m)^(?P<head>( +)UserData:\n\2  Fn::Base64: \|\n)(?P<body>(?:\2    .*\n|\n)*)")


def embed(template: str) -> str:
    """The template text with every launch template's literal user data replaced by `user_data()`."""
    def replace(found: re.Match[str]) -> str:
        indent = found.group(2) + "    "
        body = "".join(indent + line if line else "" for line in user_data().splitlines(keepends=True))
        return found.group("head") + body.replace(indent + "\n", "\n")
    updated, count = _EMBEDDED.subn(replace, template)
    if not count:
        raise ValueError("no `UserData: Fn::Base64: |` block in the template")
    return updated
