"""Which probe jobs one canary run starts, and what each is told (its `algoCustomData`).

Per environment: two sealed probes started together (roles `a` and `b`: each listens on a
loopback port and an abstract Unix socket and keeps trying the other's, which is how "another
job's listener" is tried for real when Batch places them on one instance), and, where the
environment has a network queue, one network-allowed probe (`n`) on a dataset that allows the
network; it tries the sealed probes' listeners too, and runs on instances of its own.

Locally the canary also plants listeners of the host (canary/decoys.py): a loopback port, an
abstract socket and a port on the host's own address standing in for "outside"; a sealed probe
must reach none of them.
"""
from __future__ import annotations

import hashlib
import random
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

PROBE_FILE = Path(__file__).with_name("probe.py")
SEALED_ROLES = ("a", "b")
NETWORK_ROLE = "n"
ENTRYPOINT = "python $ALGO"
PORT_CANDIDATES = 3  # a probe listens on the first free one; the others try all
PORT_RANGE = (20000, 32768)  # below Linux's ephemeral ports (32768-60999), which outgoing connections take


@dataclass(frozen=True)
class ProbeJob:
    """One probe job to start: where, in which network mode, and its part of algoCustomData."""

    environment: str
    role: str
    mode: str  # "sealed" | "network"
    config: dict[str, Any] = field(hash=False)

    @property
    def label(self) -> str:
        return f"{self.mode}-{self.role}"

    def algocustomdata(self) -> dict[str, Any]:
        return {"c2dCanary": self.config}


def new_run_id() -> str:
    return secrets.token_hex(4)


def plan_jobs(environments: Sequence[tuple[str, bool]], *, where: str, run: str, window: float,
              decoys: dict[str, list] | None = None, rng: random.Random | None = None,
              gpus: dict[str, int] | None = None) -> list[ProbeJob]:
    """The probe jobs for (environment id, has a network queue) pairs, in start order; `gpus`:
    the GPUs a job of each environment gets (the probe checks it sees them)."""
    rng = rng or random.SystemRandom()
    ports = rng.sample(range(*PORT_RANGE), PORT_CANDIDATES * 3 * max(1, len(environments)))
    jobs: list[ProbeJob] = []
    for number, (environment, networked) in enumerate(environments):
        roles = [(role, "sealed") for role in SEALED_ROLES] + ([(NETWORK_ROLE, "network")] if networked else [])
        listeners = {}
        for index, (role, _) in enumerate(roles):
            first = PORT_CANDIDATES * (3 * number + index)
            listeners[role] = {"role": role, "ports": ports[first:first + PORT_CANDIDATES],
                               "abstract": f"c2d-canary-{run}-{number}-{role}"}
        for role, mode in roles:
            config = {"run": run, "role": role, "mode": mode, "where": where, "window": window,
                      "environment": environment, "gpus": (gpus or {}).get(environment, 0), "listen": listeners[role],
                      "peers": [listener for other, listener in listeners.items() if other != role],
                      "decoys": decoys or {}}
            jobs.append(ProbeJob(environment, role, mode, config))
    return jobs


def container(image: str, *, local: bool = False) -> dict[str, str]:
    """The raw algorithm's `container` for `name[:tag]@sha256:<digest>`. The provider requires
    the image pinned by digest (the checksum); Batch pulls exactly that. Locally the image is not
    pulled at all (README, "Local mode"), so a reference without a digest gets a placeholder."""
    reference, at, digest = image.partition("@")
    slash, colon = reference.rfind("/"), reference.rfind(":")
    name, tag = (reference[:colon], reference[colon + 1:]) if colon > slash else (reference, "latest")
    if not at:
        if not local:
            raise ValueError(f"pin the probe's image by digest: --image {reference}@sha256:<digest> "
                             f"(docker buildx imagetools inspect {reference} prints it)")
        digest = "sha256:" + hashlib.sha256(f"{reference}: not pulled by the local stack".encode()).hexdigest()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ValueError(f"{image!r}: the digest must be sha256:<64 hex digits>")
    return {"image": name, "tag": tag, "checksum": digest, "entrypoint": ENTRYPOINT}


def algorithm_meta(image: str, *, local: bool = False) -> dict[str, Any]:
    """The probe as a raw algorithm (`algorithm.meta`), as ocean.py and ocean.js send one."""
    return {"rawcode": PROBE_FILE.read_text(), "language": "python", "version": "3", "format": "",
            "container": container(image, local=local)}
