"""Sealed jobs are sealed from the network and from each other on one instance (issue 18,
point 7), shown with real runc in network namespaces.

An "instance" network namespace, joined by a veth to an "outside" one that stands in for a host
of the internet (203.0.113.2) and the instance metadata service (169.254.169.254), as in
test_network_rules.py. Batch runs every container of a job with host networking, so a container
started without a network namespace of its own shares the instance's: that is what bare runc
does with Docker's spec. Through the instances' OCI runtime (infra/oci_runtime.py, as the user
data installs it), a sealed algorithm container (UID 4000) gets a network namespace of its own
with only `lo`; a network-allowed one (UID 4001) keeps the instance's, where the owner-match
rules (test_network_rules.py) are its wall. No iptables rule is loaded here: what is refused
below is refused by the namespace alone.
"""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from oci_lab import Lab, exec_process

from chalicelib.compute.job_placement import NETWORK_UID, SEALED_UID

pytestmark = pytest.mark.timeout(240)
PROBE = Path(__file__).with_name("netns_probe.py")
OUTSIDE, METADATA = "203.0.113.2", "169.254.169.254"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Network:
    """The instance and outside namespaces, and the outside's listeners."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.instance, self.outside = f"c2d-sinst-{tag}", f"c2d-sout-{tag}"
        self.servers: list[subprocess.Popen[str]] = []

    def up(self) -> None:
        inst, out = self.instance, self.outside
        _ip("netns", "add", inst)
        _ip("netns", "add", out)
        veth_in, veth_out = f"s{inst[-6:]}i", f"s{inst[-6:]}o"
        _ip("link", "add", veth_in, "netns", inst, "type", "veth", "peer", "name", veth_out, "netns", out)
        for ns in (inst, out):
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", inst, "addr", "add", "203.0.113.1/24", "dev", veth_in)
        _ip("-n", inst, "link", "set", veth_in, "up")
        _ip("-n", inst, "route", "add", "default", "via", OUTSIDE)
        _ip("-n", out, "addr", "add", f"{OUTSIDE}/24", "dev", veth_out)
        _ip("-n", out, "addr", "add", f"{METADATA}/32", "dev", veth_out)
        _ip("-n", out, "link", "set", veth_out, "up")
        server = subprocess.Popen(["ip", "netns", "exec", out, sys.executable, str(PROBE), "serve", "tcp:0.0.0.0:80",
                                   "tcp:0.0.0.0:8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.servers.append(server)
        assert server.stdout and server.stdout.readline().strip() == "ready"

    def down(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait(timeout=10)
        for ns in (self.instance, self.outside):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def network(lab: Lab) -> Iterator[Network]:
    made = Network()
    try:
        made.up()
    except (OSError, subprocess.CalledProcessError) as error:
        made.down()
        reason = error.stderr.decode().strip() if isinstance(error, subprocess.CalledProcessError) else str(error)
        pytest.skip(f"network namespaces cannot be made here (iproute2): {reason[:120]}")
    try:
        yield made
    finally:
        lab.cleanup()  # the containers first: some live in the instance namespace
        made.down()


def _probe(lab: Lab, network: Network, uid: int, *args: str, wrapped: bool) -> subprocess.CompletedProcess[str]:
    return lab.run(lab.bundle(["/probe", *args], uid=uid), wrapped=wrapped, netns=network.instance)


def _reaches(lab: Lab, network: Network, uid: int, *args: str, wrapped: bool) -> bool:
    done = _probe(lab, network, uid, *args, wrapped=wrapped)
    assert done.stdout.startswith(("reached", "refused")), done.stdout + done.stderr
    return done.returncode == 0


def test_a_sealed_algorithm_has_its_own_loopback_and_nothing_else(lab, network):
    """Docker's host-networked spec with a network namespace added starts (its bind-mounted
    /etc/hosts, /etc/resolv.conf, /etc/hostname, sysfs and /dev/shm included); runc brings `lo`
    up in it, and the algorithm's own processes talk over localhost."""
    assert _probe(lab, network, SEALED_UID, "netdevs", wrapped=True).stdout.split() == ["interfaces:", "lo"]
    assert "interfaces: lo" != _probe(lab, network, SEALED_UID, "netdevs", wrapped=False).stdout.strip()
    assert _reaches(lab, network, SEALED_UID, "self-loopback", "7301", wrapped=True)


def test_a_sealed_algorithm_reaches_no_host_and_no_metadata_service(lab, network):
    """Bare runc (host networking, and here no owner rules) reaches the internet and the metadata
    service; the sealed container has no route to anything, nor does an exec in it (the
    HEALTHCHECK path joins its namespaces)."""
    for target, port in ((OUTSIDE, "8080"), (METADATA, "80")):
        assert _reaches(lab, network, SEALED_UID, "connect", target, port, wrapped=False)
        refused = _probe(lab, network, SEALED_UID, "connect", target, port, wrapped=True)
        assert refused.returncode == 1 and "Network is unreachable" in refused.stdout, refused.stdout
    bundle = lab.bundle(["/probe", "serve-tcp", "7302"], uid=SEALED_UID)
    process = exec_process(lab.spec(bundle), ["/probe", "connect", OUTSIDE, "8080"])
    container = lab.start(bundle, wrapped=True, netns=network.instance)
    done = lab.exec(container, process, wrapped=True, netns=network.instance)
    assert done.returncode == 1 and "Network is unreachable" in done.stdout, done.stdout + done.stderr


def test_sealed_jobs_cannot_reach_each_other(lab, network):
    """Host networking shares loopback ports and abstract Unix sockets between every job of an
    instance whatever their UIDs (bare runc: a UID 4000 job drives another one's listeners);
    a sealed container can reach neither another job's listener nor be reached by one."""
    tag = uuid.uuid4().hex[:6]
    listeners = {}
    for wrapped in (False, True):
        kind = "sealed" if wrapped else "host"
        name, port = f"c2d-{kind}-{tag}", "7311" if wrapped else "7312"
        for args in (["serve-abstract", name], ["serve-tcp", port]):
            lab.start(lab.bundle(["/probe", *args], uid=SEALED_UID), wrapped=wrapped, netns=network.instance)
        listeners[kind] = (["connect-abstract", name], ["connect", "127.0.0.1", port])
    for attempt in listeners["host"]:  # the observation, reproduced
        assert _reaches(lab, network, SEALED_UID, *attempt, wrapped=False)
    for attempt in listeners["sealed"]:  # a sealed victim is out of reach of a host-networked job
        assert not _reaches(lab, network, SEALED_UID, *attempt, wrapped=False)
    for attempt in listeners["host"] + listeners["sealed"]:  # a sealed attacker reaches no one
        assert not _reaches(lab, network, SEALED_UID, *attempt, wrapped=True)


def test_a_network_allowed_algorithm_keeps_the_instances_network(lab, network):
    """UID 4001 runs on compute environments of network-allowed jobs only; it keeps host
    networking (the owner-match rules keep it from metadata, credentials and private ranges)."""
    assert _reaches(lab, network, NETWORK_UID, "connect", OUTSIDE, "8080", wrapped=True)
    assert "interfaces: lo" != _probe(lab, network, NETWORK_UID, "netdevs", wrapped=True).stdout.strip()
