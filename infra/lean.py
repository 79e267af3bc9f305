"""What the Lambda package leaves out: files the deployed functions never import, read or call.

Chalice vendors whole distributions. Of the 40 MB zip they made, botocore's data was 16.5 MB: the
models of some 420 AWS services, when the functions build clients for six. `python -m
infra.bytecode` (the step `make package` and `make deploy` run) removes, from the zip Chalice
caches and then reuses, what these rules name, and each rule says why nothing runs it:

- botocore's and boto3's data of every service but AWS_SERVICES, and of those only the API
  version botocore loads (the newest), without `examples-1.json` (documentation only). The
  shared files stay (endpoints.json, partitions.json, sdk-default-configuration.json,
  _retry.json); endpoints.json keeps only the kept services' entries (the first client parses
  it: 1.25 MB of JSON for 420 services), and the kept models lose their documentation strings,
  which only help() and docstrings read (DynamoDB's model: 556 KB of JSON, 113 KB without them;
  the first client of a container parses it);
- test suites and test-only modules of vendored distributions (pycryptodome's SelfTest,
  `tests/` folders, multidict's test C API, web3's module_testing and its contract sources);
- C/Cython sources and type stubs (.c, .h, .pyx, .pxd, .pxi, .pyi): nothing compiles or
  type-checks in Lambda;
- the C speedups of aiohttp and of its own dependencies: web3 8 imports aiohttp (and
  websockets) at import time for its async providers, so their Python stays, but the provider
  talks to chains through the synchronous HTTPProvider (requests) and never runs an aiohttp
  parser or writer; each of these packages falls back to its pure-Python twin, which ships;
- eth-account's KZG trusted setup, read only to sign blob transactions (EIP-4844), which the
  provider never sends.

A new AWS service: add it to AWS_SERVICES (with what builds its client); the package test fails
while code builds a client for a service whose model the package does not keep.
"""
from __future__ import annotations

import ast
import gzip
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

AWS_SERVICES: dict[str, str] = {
    "batch": "chalicelib.services.dispatcher and algorithm_logs, chalicelib.compute.reconcile",
    "dynamodb": "PynamoDB, for every table (chalicelib.models, chalicelib.payments.models)",
    "logs": "chalicelib.services.algorithm_logs (computeStreamableLogs)",
    "s3": "chalicelib.services.job_service and algorithm_logs, chalicelib.compute.checksums",
    "secretsmanager": "chalicelib.config (PROVIDER_KEY_SECRET, JWT_SECRET_NAME)",
    "ssm": "chalicelib.config (ssm:/ secrets)",
}
"""The services whose clients the deployed functions build, and where."""

CHECKOUT_ONLY_CLIENTS: dict[str, set[str]] = {
    "chalicelib/bootstrap.py": {"iam", "ec2"},
}
"""Clients built only by commands run from a checkout with the full botocore, never by a Lambda:
`python -m chalicelib.bootstrap --batch` makes a local stack's Batch queues (IAM roles, the default
VPC). The serving test shows no function imports that module."""

BOTOCORE_SHARED = ("_retry.json", "endpoints.json", "partitions.json", "sdk-default-configuration.json")
ENDPOINTS = "botocore/data/endpoints.json"
SOURCES_AND_STUBS = (".c", ".h", ".cpp", ".pyx", ".pxd", ".pxi", ".pyi")
TEST_FOLDERS = {"tests", "test", "SelfTest"}
TEST_ONLY = ("web3/_utils/module_testing/", "web3/_utils/contract_sources/")
UNUSED_SPEEDUPS = re.compile(r"^(aiohttp|aiohttp/_websocket|multidict|yarl|frozenlist|propcache)/[^/]+\.so$")
UNUSED_DATA = ("eth_account/typed_transactions/blob_transactions/kzg_trusted_setup.txt",)
OWN_CODE = ("app.py", "chalicelib/", "chalice/")


@dataclass
class Plan:
    """What to drop (by rule) and what to rewrite (name -> new bytes) in a package."""

    dropped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    rewritten: dict[str, bytes] = field(default_factory=dict)
    _dropped_names: set[str] = field(default_factory=set)

    def drop(self, name: str, why: str) -> None:
        self.dropped[why].append(name)
        self._dropped_names.add(name)

    def drops(self, name: str) -> bool:
        return name in self._dropped_names


def _latest_versions(names: Iterable[str], root: str) -> dict[str, str]:
    """service -> the newest API version folder under `root` (what botocore's loader picks)."""
    versions: dict[str, set[str]] = defaultdict(set)
    for name in names:
        parts = name[len(root):].split("/")
        if name.startswith(root) and len(parts) >= 3:
            versions[parts[0]].add(parts[1])
    return {service: max(found) for service, found in versions.items()}


def _data_rule(name: str, root: str, latest: dict[str, str], keep: set[str]) -> str | None:
    """Why a file of botocore/data or boto3/data goes, or None to keep it."""
    relative = name[len(root):]
    parts = relative.split("/")
    if len(parts) == 1:
        return None if root == "boto3/data/" or relative in BOTOCORE_SHARED else "botocore data of no service"
    service = parts[0]
    if service not in keep:
        return f"{root.split('/')[0]} data of services no function calls"
    if len(parts) >= 3 and parts[1] != latest.get(service):
        return f"{root.split('/')[0]} data of API versions botocore does not load"
    if parts[-1] == "examples-1.json":
        return "botocore examples (documentation only)"
    return None


def _rule(name: str, latest: dict[str, dict[str, str]], keep: set[str]) -> str | None:
    """Why `name` leaves the package, or None to keep it."""
    if name.startswith(OWN_CODE) or name.endswith("/"):
        return None
    for root in ("botocore/data/", "boto3/data/"):
        if name.startswith(root):
            return _data_rule(name, root, latest[root], keep)
    parts = name.split("/")
    if ".dist-info" in parts[0]:
        return None
    if TEST_FOLDERS & set(parts[1:-1]) or name.startswith(TEST_ONLY) or "/_testcapi." in name:
        return "test suites and test-only modules"
    if name.endswith(SOURCES_AND_STUBS):
        return "C/Cython sources and type stubs"
    if UNUSED_SPEEDUPS.match(name):
        return "C speedups of aiohttp and its dependencies (web3's async providers; pure Python kept)"
    if name in UNUSED_DATA:
        return "KZG trusted setup (blob transactions)"
    return None


def _undocumented(value: object) -> object:
    if isinstance(value, dict):
        return {key: _undocumented(item) for key, item in value.items() if key not in ("documentation", "documentationUrl")}
    if isinstance(value, list):
        return [_undocumented(item) for item in value]
    return value


def slim_model(data: bytes, gzipped: bool) -> bytes:
    """A service model without the documentation of its operations and shapes (botocore reads
    those with `.get(..., '')`, for docstrings), compressed as it was. Metadata and client context
    parameters stay whole: botocore indexes their `documentation`."""
    model = json.loads(gzip.decompress(data) if gzipped else data)
    model.pop("documentation", None)
    for part in ("operations", "shapes"):
        model[part] = _undocumented(model.get(part, {}))
    text = json.dumps(model, separators=(",", ":"), sort_keys=True).encode()
    return gzip.compress(text, mtime=0) if gzipped else text


def slim_endpoints(data: bytes, prefixes: set[str]) -> bytes:
    """endpoints.json with, in each partition, only the services of `prefixes`; the partitions'
    own data (regions, defaults, DNS suffixes) stays whole."""
    endpoints = json.loads(data)
    for partition in endpoints["partitions"]:
        partition["services"] = {name: value for name, value in partition["services"].items() if name in prefixes}
    return json.dumps(endpoints, indent=None, separators=(",", ":"), sort_keys=True).encode()


def plan(names: list[str], read: Callable[[str], bytes], keep: Iterable[str] = AWS_SERVICES) -> Plan:
    """The plan for a package holding `names`, `read(name)` giving a file's bytes."""
    kept = set(keep)
    latest = {root: _latest_versions(names, root) for root in ("botocore/data/", "boto3/data/")}
    result = Plan()
    for name in names:
        why = _rule(name, latest, kept)
        if why:
            result.drop(name, why)
    models = [name for name in names if name.startswith("botocore/data/") and not result.drops(name)
              and name.endswith(("/service-2.json.gz", "/service-2.json"))]
    missing = kept - {name.split("/")[2] for name in models}
    if missing:
        raise SystemExit(f"botocore has no model for {sorted(missing)}: check AWS_SERVICES in infra/lean.py")
    prefixes = set()
    for model in models:
        raw = read(model)
        prefixes.add(json.loads(gzip.decompress(raw) if model.endswith(".gz") else raw)["metadata"]["endpointPrefix"])
        result.rewritten[model] = slim_model(raw, model.endswith(".gz"))
    if ENDPOINTS in names:
        result.rewritten[ENDPOINTS] = slim_endpoints(read(ENDPOINTS), prefixes)
    return result


# -- which AWS clients the code builds ------------------------------------------------------------

CLIENT_FACTORIES = {"client", "create_client", "resource"}


@dataclass(frozen=True)
class ClientCall:
    path: str
    line: int
    service: str | None  # None: not a literal


def client_calls(root: Path, sources: Iterable[str] = ("app.py", "chalicelib")) -> list[ClientCall]:
    """Every call `x.client("service")` / `create_client(...)` / `resource(...)` in the code
    that ships, and the DynamoDB client PynamoDB builds for every module defining a Model."""
    calls = []
    files = [path for source in sources for path in sorted((root / source).rglob("*.py") if (root / source).is_dir()
                                                             else [root / source])]
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        relative = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                function = node.func
                name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
                if name in CLIENT_FACTORIES and (node.args or any(k.arg == "service_name" for k in node.keywords)):
                    argument = node.args[0] if node.args else next(k.value for k in node.keywords if k.arg == "service_name")
                    literal = argument.value if isinstance(argument, ast.Constant) and isinstance(argument.value, str) else None
                    calls.append(ClientCall(relative, node.lineno, literal))
            elif isinstance(node, ast.ClassDef) and any(getattr(base, "id", getattr(base, "attr", "")) == "Model"
                                                        for base in node.bases) and "pynamodb" in path.read_text():
                calls.append(ClientCall(relative, node.lineno, "dynamodb"))
    return calls
