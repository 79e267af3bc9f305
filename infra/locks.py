"""The dependency locks as data: what `make lock` wrote (uv pip compile --generate-hashes), read
back to check installs and packages against it.

A lock is a pip requirements file of `name==version` lines, each with its `--hash=sha256:`
options and, in the universal locks, an environment marker. Names are compared in their
normalized form (PEP 503: `PyJWT`, `pyjwt` and `py_jwt` are one project).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_LOCK = ROOT / "requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"
OCEAN_PY_LOCK = ROOT / "tests" / "compat" / "requirements-ocean-py.txt"
LOCKS = {ROOT / "requirements.in": LAMBDA_LOCK, ROOT / "requirements-dev.in": DEV_LOCK,
         ROOT / "tests" / "compat" / "requirements-ocean-py.in": OCEAN_PY_LOCK}
"""Each input of ranges and the lock `make lock` compiles from it, beside it."""

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]+?))?\s*$")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        """Whether this environment installs it (its marker, if any, holds here)."""
        if not self.marker:
            return True
        from packaging.markers import Marker

        return Marker(self.marker).evaluate()


def requirements(path: Path) -> Iterable[str]:
    """The file's requirements, one logical line each: continuations joined, comments and blank
    lines dropped."""
    logical = ""
    for line in path.read_text().splitlines():
        text = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if text.endswith("\\"):
            logical += text[:-1] + " "
            continue
        logical += text
        if logical.strip():
            yield logical.strip()
        logical = ""
    if logical.strip():
        yield logical.strip()


def pins(lock: Path) -> dict[str, Pin]:
    """Every pin of a lock by normalized name; a line that is not an exact, hashed pin raises."""
    found: dict[str, Pin] = {}
    for line in requirements(lock):
        head = line.split(" --hash", 1)[0].strip()
        match = _PIN.match(head)
        hashes = tuple(_HASH.findall(line))
        if not match or not hashes:
            raise ValueError(f"{lock.name}: not an exact pin with hashes: {head}")
        pin = Pin(match["name"], match["version"], (match["marker"] or "").strip() or None, hashes)
        found[normalized(pin.name)] = pin
    return found


def vendored(names: Iterable[str]) -> dict[str, str]:
    """Normalized project name -> version of every distribution a package folder or zip holds,
    from the names of its top-level `*.dist-info/` entries."""
    found = {}
    for name in names:
        top = name.split("/", 1)[0]
        if top.endswith(".dist-info"):
            project, _, version = top[: -len(".dist-info")].rpartition("-")
            found[normalized(project)] = version
    return found


def vendoring_differences(names: Iterable[str], lock: Path = LAMBDA_LOCK) -> list[str]:
    """How a package's distributions differ from the Lambda's lock (empty when they are equal)."""
    locked = {name: pin.version for name, pin in pins(lock).items() if pin.applies()}
    shipped = vendored(names)
    problems = [f"{name}: locked {version}, vendored {shipped.get(name, 'nothing')}"
                for name, version in sorted(locked.items()) if shipped.get(name) != version]
    problems += [f"{name} {version}: vendored, not in {lock.name}" for name, version in sorted(shipped.items())
                 if name not in locked]
    return problems
