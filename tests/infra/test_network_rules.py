"""The Batch instances' network rules for the algorithm's UIDs, tested for real.

The rule files and their loader are taken out of the launch templates' user data in
infra/resources.yaml (so what is tested is exactly what an instance installs), then loaded with
Debian's iptables into an "instance" network namespace joined by a veth to an "outside"
namespace that stands in for the internet (203.0.113.2, a documentation address), the instance
metadata service (169.254.169.254) and a private host of the VPC (10.99.0.10). The ECS agent's
credential endpoint is stood in for as ecs-init installs it: a listener on 127.0.0.1:51679 and its
nat rule redirecting 169.254.170.2:80 there. All traffic stays inside these namespaces.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra import network_rules
from infra_helpers import TEMPLATE, boot_script, installed_files, launch_template_user_data, load_cfn, readable

HERE = Path(__file__).parent
PROBE = HERE / "netns_probe.py"
SEALED, NETWORK = 4000, 4001
OUTSIDE, METADATA, CREDENTIALS, PRIVATE = "203.0.113.2", "169.254.169.254", "169.254.170.2", "10.99.0.10"
ROOT_PORT, SEALED_PORT, NETWORK_PORT, AGENT_PORT = 8081, 8082, 8083, 51679
STUB_RESOLVER = "127.0.0.53"
OUTSIDE6 = "2001:db8::2"  # documentation prefix


def test_both_launch_templates_install_the_generated_rules(infra_template):
    """One source (infra/network_rules.py); the template embeds it verbatim (regenerate with
    `python -m infra user-data --write`)."""
    cpu = launch_template_user_data(infra_template, "CpuLaunchTemplate")
    assert cpu == launch_template_user_data(infra_template, "GpuLaunchTemplate")
    assert readable(cpu) == readable(network_rules.user_data())
    assert len(cpu.encode()) <= network_rules.USER_DATA_LIMIT - 1024  # room for AWS Batch's own MIME part
    files = installed_files(cpu)
    assert files[f"{network_rules.RULES_DIR}/{network_rules.V4_FILE}"] == network_rules.ipv4_rules()
    assert files[f"{network_rules.RULES_DIR}/{network_rules.V6_FILE}"] == network_rules.ipv6_rules()
    assert files[network_rules.APPLY_PATH] == network_rules.apply_script()
    unit = files[f"/etc/systemd/system/{network_rules.UNIT_NAME}"]
    assert "Before=network-pre.target docker.service ecs.service" in unit  # at every boot, before any job
    # fail closed: the ECS agent, which starts every job, does not start without the rules, nor
    # unless Docker runs containers through the runtime (infra/oci_runtime.py)
    assert files[network_rules.ECS_DROP_IN] == (
        f"[Unit]\nRequires={network_rules.UNIT_NAME} docker.service\nAfter={network_rules.UNIT_NAME} docker.service\n"
        f"\n[Service]\nExecStartPre={network_rules.CHECK_PATH}\n")
    assert files[network_rules.CHECK_PATH] == network_rules.check_script()
    assert files[network_rules.RUNTIME_PATH] == network_rules.RUNTIME_SOURCE.read_text()
    script = boot_script(cpu)
    assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script
    assert f"systemctl enable --now {network_rules.UNIT_NAME}" in script
    for link in network_rules.RUNTIME_LINKS.values():
        assert f"ln -sf {network_rules.RUNTIME_PATH} {link}\n" in script
    configure = f"{network_rules.RUNTIME_PATH} --c2d-configure {network_rules.DAEMON_JSON} {network_rules.ECS_CONFIG}\n"
    assert script.index(configure) < script.index("systemctl try-restart docker\n")


def test_the_installed_runtime_decodes_on_the_instance(infra_template, tmp_path):
    """The runtime is installed by `base64 -d | gunzip` (coreutils, gzip): the shell does it here
    as the instance does, and gets the source back."""
    script = boot_script(launch_template_user_data(infra_template, "CpuLaunchTemplate"))
    start = script.index("base64 -d <<'C2D_EOF' | gunzip > ")
    end = script.index("C2D_EOF\n", script.index("\n", start) + 1) + len("C2D_EOF\n")
    target = tmp_path / "oci-runtime"
    snippet = script[start:end].replace(f" > {network_rules.RUNTIME_PATH}\n", f" > {target}\n", 1)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", snippet], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == network_rules.RUNTIME_SOURCE.read_text()


# -- the namespaces -------------------------------------------------------------------------

def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=30)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces and iptables need root (CI runs as root)"
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian iptables/iproute2; .ci/run installs them)"
    probe = f"c2d-probe-{uuid.uuid4().hex[:6]}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"this kernel has no network namespaces here ({made.stderr.strip()[:80]})"
    _run("ip", "netns", "del", probe, check=False)
    return None


class Namespaces:
    def __init__(self, root: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.instance, self.outside = f"c2d-inst-{tag}", f"c2d-out-{tag}"
        self.root = root
        self.servers: list[subprocess.Popen[str]] = []
        self.receipts = root / "udp-receipts.log"

    def exec(self, ns: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", ns, *command, check=check)

    def up(self) -> None:
        inst, out = self.instance, self.outside
        _run("ip", "netns", "add", inst)
        _run("ip", "netns", "add", out)
        veth_in, veth_out = f"v{inst[-6:]}i", f"v{inst[-6:]}o"
        _run("ip", "link", "add", veth_in, "netns", inst, "type", "veth", "peer", "name", veth_out, "netns", out)
        for ns in (inst, out):
            self.exec(ns, "ip", "link", "set", "lo", "up")
        self.exec(inst, "ip", "addr", "add", "203.0.113.1/24", "dev", veth_in)
        self.exec(inst, "ip", "link", "set", veth_in, "up")
        self.exec(inst, "ip", "route", "add", "default", "via", OUTSIDE)
        self.exec(inst, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", veth_in, "nodad")
        self.exec(out, "ip", "-6", "addr", "add", f"{OUTSIDE6}/64", "dev", veth_out, "nodad")
        self.exec(out, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", veth_out)
        for address in (METADATA, PRIVATE):
            self.exec(out, "ip", "addr", "add", f"{address}/32", "dev", veth_out)
        self.exec(out, "ip", "link", "set", veth_out, "up")
        # ecs-init's rule for the task credential endpoint (not ours: the agent installs it)
        self.exec(inst, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-d", CREDENTIALS, "-p", "tcp",
                  "--dport", "80", "-j", "REDIRECT", "--to-ports", str(AGENT_PORT))
        self.serve(out, None, "tcp:0.0.0.0:80", "tcp:0.0.0.0:8080", f"tcp:{OUTSIDE6}:8080")
        self.serve(inst, None, f"tcp:127.0.0.1:{AGENT_PORT}", f"tcp:127.0.0.1:{ROOT_PORT}",
                   f"udp:{STUB_RESOLVER}:53")
        self.serve(inst, SEALED, f"tcp:127.0.0.1:{SEALED_PORT}", f"tcp:::1:{SEALED_PORT}")
        self.serve(inst, NETWORK, f"tcp:127.0.0.1:{NETWORK_PORT}")

    def serve(self, ns: str, uid: int | None, *endpoints: str) -> None:
        command = ["ip", "netns", "exec", ns, sys.executable, str(PROBE), "serve", "--log", str(self.receipts)]
        if uid is not None:
            command += ["--uid", str(uid)]
        server = subprocess.Popen([*command, *endpoints], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.servers.append(server)
        line = server.stdout.readline() if server.stdout else ""
        assert line.strip() == "ready", server.stderr.read() if server.stderr else line

    def reaches(self, uid: int | None, target: str, port: int, proto: str = "tcp") -> bool:
        command = [sys.executable, str(PROBE), "probe", proto, target, str(port)]
        if uid is not None:
            command[2:2] = ["--uid", str(uid)]
        return self.exec(self.instance, *command, check=False).returncode == 0

    def down(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait(timeout=10)
        for ns in (self.instance, self.outside):
            _run("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def instance(tmp_path_factory, infra_template):
    """The namespaces with the template's rules loaded in the instance (twice: a reboot's reload
    must replace them, not stack a second copy)."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("netns")
    rules = root / "etc-c2d"
    rules.mkdir()
    files = installed_files(launch_template_user_data(infra_template, "CpuLaunchTemplate"))
    for path, body in files.items():
        if path.startswith(network_rules.RULES_DIR + "/"):
            (rules / Path(path).name).write_text(body)
    loader = root / "c2d-algorithm-rules"
    loader.write_text(files[network_rules.APPLY_PATH])
    spaces = Namespaces(root)
    try:
        spaces.up()
        for _ in range(2):
            spaces.exec(spaces.instance, "sh", str(loader), str(rules))
        yield spaces
    finally:
        spaces.down()


def test_reloading_the_rules_replaces_them(instance):
    saved = instance.exec(instance.instance, "iptables-save").stdout
    assert saved.count("-A OUTPUT -j C2D-ALGO") == 1 and saved.count("-A OUTPUT -j C2D-MARK") == 1
    assert instance.exec(instance.instance, "sysctl", "-n", "net.ipv4.tcp_fastopen").stdout.strip() == "1"


def test_the_runner_uid_reaches_everything(instance):
    """Root (configure, publish, the ECS agent) is not affected: it needs its credentials."""
    assert instance.reaches(None, OUTSIDE, 8080)
    assert instance.reaches(None, METADATA, 80)
    assert instance.reaches(None, CREDENTIALS, 80)  # through the agent's redirect
    assert instance.reaches(None, PRIVATE, 8080)
    assert instance.reaches(None, "127.0.0.1", AGENT_PORT)


def test_the_sealed_uid_reaches_nothing_outside(instance):
    assert not instance.reaches(SEALED, OUTSIDE, 8080)
    assert not instance.reaches(SEALED, OUTSIDE, 80)
    assert not instance.reaches(SEALED, METADATA, 80)
    assert not instance.reaches(SEALED, CREDENTIALS, 80)
    assert not instance.reaches(SEALED, "127.0.0.1", AGENT_PORT)
    assert not instance.reaches(SEALED, PRIVATE, 8080)


def test_the_network_uid_reaches_the_internet_but_no_credentials(instance):
    assert instance.reaches(NETWORK, OUTSIDE, 8080)
    assert not instance.reaches(NETWORK, METADATA, 80)
    assert not instance.reaches(NETWORK, CREDENTIALS, 80)
    assert not instance.reaches(NETWORK, "127.0.0.1", AGENT_PORT)
    assert not instance.reaches(NETWORK, PRIVATE, 8080)


def test_loopback_only_between_processes_of_the_same_uid(instance):
    """An algorithm may use localhost among its own processes; it may not reach root's services
    or the other UID's listener (a network-allowed job on the same instance could relay data)."""
    assert instance.reaches(SEALED, "127.0.0.1", SEALED_PORT)
    assert instance.reaches(NETWORK, "127.0.0.1", NETWORK_PORT)
    assert not instance.reaches(SEALED, "127.0.0.1", ROOT_PORT)
    assert not instance.reaches(SEALED, "127.0.0.1", NETWORK_PORT)
    assert not instance.reaches(NETWORK, "127.0.0.1", SEALED_PORT)
    assert instance.reaches(None, "127.0.0.1", SEALED_PORT)  # not a rule against loopback as such


def test_ipv6_only_on_loopback_for_both_uids(instance):
    assert instance.reaches(None, OUTSIDE6, 8080)
    assert not instance.reaches(SEALED, OUTSIDE6, 8080)
    assert not instance.reaches(NETWORK, OUTSIDE6, 8080)
    assert instance.reaches(SEALED, "::1", SEALED_PORT)
    assert not instance.reaches(NETWORK, "::1", SEALED_PORT)


def test_dns_through_the_stub_resolver_only_for_the_network_uid(instance):
    """A sealed algorithm's datagram to the stub resolver is never delivered (DNS would carry
    data out); the network-allowed one resolves names."""
    instance.receipts.write_text("")
    assert not instance.reaches(SEALED, STUB_RESOLVER, 53, "udp")
    time.sleep(0.2)
    assert f"from {SEALED}" not in instance.receipts.read_text()
    assert instance.reaches(NETWORK, STUB_RESOLVER, 53, "udp")
    assert f"from {NETWORK}" in instance.receipts.read_text()


def test_the_boot_script_is_valid_bash(infra_template):
    script = boot_script(launch_template_user_data(infra_template, "CpuLaunchTemplate"))
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert checked.returncode == 0, checked.stderr
    for shell_script in (network_rules.apply_script(), network_rules.check_script()):
        checked = subprocess.run(["sh", "-n"], input=shell_script, capture_output=True, text=True, timeout=10)
        assert checked.returncode == 0, checked.stderr


def test_the_cli_prints_and_rewrites_the_user_data(tmp_path, capsys):
    from infra.__main__ import main

    assert main(["user-data"]) == 0
    assert capsys.readouterr().out == network_rules.user_data()
    template = tmp_path / "infra" / "resources.yaml"
    template.parent.mkdir()
    stale = TEMPLATE.read_text().replace("C2D-UID-4001", "C2D-UID-STALE")
    template.write_text(stale)
    assert main(["--project-dir", str(tmp_path), "user-data", "--write"]) == 0
    rewritten, committed = load_cfn(template), load_cfn(TEMPLATE)
    for name in ("CpuLaunchTemplate", "GpuLaunchTemplate"):
        data = [t["Resources"][name]["Properties"]["LaunchTemplateData"].pop("UserData") for t in (rewritten, committed)]
        assert readable(data[0]["Fn::Base64"]) == readable(data[1]["Fn::Base64"])
    assert rewritten == committed
