"""The deployment package beside today's main's, measured in one interleaved run (issue 17).

Both packages are built the way each tree builds its own (`python -m infra.bytecode --stage dev`):
this checkout's, and main's at BASELINE (git archive of that commit into a temporary folder; set
BENCH_BASELINE to compare with another commit). Each is unzipped into a folder of its own and run
as Lambda runs it: the base interpreter, `-I -S -B`, only the package and the standard library on
the path (devstack.lambda_package). Every round runs, for main's package then this one, fresh
processes for:

- the interpreter alone (`-c pass`, spawn to exit): the floor of any cold start;
- `import botocore.session`: the floor of `import app`, since PynamoDB needs botocore on every
  signed route;
- `import botocore.session` with the other libraries every request needs: PynamoDB, Chalice and
  pydantic with a model class (every route validates its parameters with pydantic; app.py's
  models build their validators on first use, so this one does too);
- `import app`;
- the first DynamoDB call of a fresh process (client built, one GetItem): the floor of the first
  signed request, which consumes a nonce with one conditional write;
- a fresh process's first requests against a moto server and anvil: a signed stop of a finished
  job (nonce, job read), then a POST /compute (resolve, decrypt, orders on chain, reserve,
  manifest, SubmitJob, Batch stubbed with botocore's Stubber in that process).

Medians of ROUNDS rounds; the rows are this tree's against the issue's budgets.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE = os.environ.get("BENCH_BASELINE", "291c33f")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
ZIP_BUDGET_MB = 25
IMPORT_RATIO_BUDGET = 1.25
FIRST_SIGNED_BUDGET_MS = 60
IGNORES = shutil.ignore_patterns(".git", ".venv", "node_modules", ".local", ".hypothesis", ".benchmarks",
                                 ".pytest_cache", "__pycache__", "deployments", "deployed", "build")

TIMED_IMPORT = "import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); import {module}; " \
               "print((time.perf_counter() - t) * 1000)"
LIBRARIES = ("import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); import botocore.session, "
             "pynamodb.models, chalice.app, pydantic\nclass Model(pydantic.BaseModel):\n"
             "    model_config = pydantic.ConfigDict(defer_build=True)\n    field: int\n"
             "print((time.perf_counter() - t) * 1000)")
FIRST_DYNAMODB_CALL = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
import botocore.session
t = time.perf_counter()
client = botocore.session.get_session().create_client("dynamodb", region_name=os.environ["AWS_REGION"])
client.get_item(TableName=os.environ["RESOURCE_PREFIX"] + "-nonces", Key={"address": {"S": "0x" + "0" * 40}})
print((time.perf_counter() - t) * 1000)
"""
BATCH_RESPONSES = [
    ["describe_job_definitions", {"jobDefinitions": []}],
    ["register_job_definition", {"jobDefinitionName": "c2d-algo", "revision": 1,
                                 "jobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/c2d-algo:1"}],
    ["submit_job", {"jobName": "c2d", "jobId": "batch-job", "jobArn": "arn:aws:batch:us-east-1:123456789012:job/batch-job"}],
]


def _credential_free_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    return env


def _source(work: Path, commit: str | None) -> Path:
    """This checkout (as it is, uncommitted changes included), or `commit` of its history."""
    project = work / "project"
    if commit is None:
        shutil.copytree(ROOT, project, ignore=IGNORES)
        return project
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
    project.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(project, filter="data")
    return project


def build(work: Path, commit: str | None) -> Path:
    """The dev stage's finished deployment zip of a tree, built by that tree's own step."""
    project = _source(work, commit)
    subprocess.run([sys.executable, "-m", "infra.bytecode", "--stage", "dev"], cwd=project, env=_credential_free_env(),
                   check=True, capture_output=True, timeout=600)
    (package,) = (project / ".chalice" / "deployments").glob("*.zip")
    return package


def _sizes(package: Path) -> dict[str, float]:
    with zipfile.ZipFile(package) as archive:
        infos = archive.infolist()
    botocore = sum(i.compress_size for i in infos if i.filename.startswith(("botocore/", "boto3/")))
    return {"zip_mb": package.stat().st_size / 1e6, "unzipped_mb": sum(i.file_size for i in infos) / 1e6,
            "botocore_mb": botocore / 1e6}


def _timed(python: str, folder: Path, code: str, env: dict[str, str]) -> float:
    done = subprocess.run([python, "-I", "-S", "-B", "-c", code, str(folder)], capture_output=True, text=True,
                          check=True, env=env, cwd=folder.parent, timeout=120)
    return float(done.stdout.strip().splitlines()[-1])


def _interpreter_ms(python: str) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-I", "-S", "-B", "-c", "pass"], check=True, timeout=60)
    return (time.perf_counter() - started) * 1000


def _first_requests(backends: Any, folder: Path, start_body: dict[str, Any]) -> dict[str, Any]:
    from devstack.lambda_package import JOB_FINISHED, proxy_event

    consumer = backends.consumer
    nonce, signature = backends.signed(consumer + JOB_FINISHED)
    stop = {"consumerAddress": consumer, "jobId": JOB_FINISHED, "nonce": nonce, "signature": signature}
    nonce, signature = backends.signed(consumer + start_body["dataset"]["documentId"])  # after the stop's
    start_body = {**start_body, "nonce": nonce, "signature": signature}
    result = backends.serve(folder, [
        {"kind": "http", "label": "stop", "event": proxy_event("PUT", "/api/services/compute", stop)},
        {"kind": "stub", "label": "batch", "service": "batch", "responses": BATCH_RESPONSES},
        {"kind": "http", "label": "start", "event": proxy_event("POST", "/api/services/compute", None,
                                                                   json.dumps(start_body),
                                                                   {"Content-Type": "application/json"})},
    ])
    steps = {step["label"]: step for step in result["steps"]}
    if steps["stop"].get("status") != 200:
        raise AssertionError(f"stop: {steps['stop']}\n{result['stderr'][-3000:]}")
    if steps["stop"]["chain_loaded"]:
        raise AssertionError(f"a signed stop imported {steps['stop']['chain_loaded']}")
    timings = {"stop_ms": steps["stop"]["ms"]}
    # A start pins the algorithm's image through its registry (issue 22); a machine that reaches
    # no registry answers 503 there, and the start's row says so instead of a time.
    if steps["start"].get("status") == 200:
        timings["start_ms"] = steps["start"]["ms"]
    elif "registry" not in str(steps["start"].get("body", "")):
        raise AssertionError(f"start: {steps['start']}\n{result['stderr'][-3000:]}")
    return timings


def _start_body(backends: Any) -> dict[str, Any]:
    """A POST /compute body on fresh orders (quoted by this tree's provider, in process); the
    probe's own nonce and signature replace the ones it carries."""
    from chalice.test import Client

    import app as app_module
    from bench.consumer import order_and_start_body

    with backends.in_process(), Client(app_module.app, stage_name="local") as client:
        return order_and_start_body(client, backends.chain, backends.samples)


def _enough_datatokens(backends: Any, starts: int) -> None:
    """One order of each asset per start (publish_samples gives the consumer 10)."""
    from devstack.orders import mint_datatokens

    chain = backends.chain
    for asset in (backends.samples.dataset, backends.samples.algorithm):
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address, starts * 10**18)


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    from devstack.lambda_package import base_python, local_backends, unpack

    python = base_python()
    samples: dict[str, dict[str, list[float]]] = {"main": {}, "this": {}}
    with tempfile.TemporaryDirectory(prefix="bench-package-") as temporary:
        work = Path(temporary)
        packages = {"main": build(work / "main", BASELINE), "this": build(work / "this", None)}
        folders = {name: unpack(package, work / name / "task") for name, package in packages.items()}
        sizes = {name: _sizes(package) for name, package in packages.items()}
        with local_backends("bench") as backends:
            env = backends.env
            _enough_datatokens(backends, starts=2 * rounds)
            for _ in range(rounds):
                for name, folder in folders.items():
                    found = samples[name]
                    found.setdefault("interpreter_ms", []).append(_interpreter_ms(python))
                    found.setdefault("botocore_ms", []).append(
                        _timed(python, folder, TIMED_IMPORT.format(module="botocore.session"), env))
                    found.setdefault("libraries_ms", []).append(_timed(python, folder, LIBRARIES, env))
                    found.setdefault("import_ms", []).append(_timed(python, folder, TIMED_IMPORT.format(module="app"), env))
                    found.setdefault("first_dynamodb_ms", []).append(_timed(python, folder, FIRST_DYNAMODB_CALL, env))
                    for key, value in _first_requests(backends, folder, _start_body(backends)).items():
                        found.setdefault(key, []).append(value)
    medians = {name: {key: statistics.median(values) for key, values in found.items()} for name, found in samples.items()}
    for name in medians:
        medians[name].update(sizes[name])
        medians[name]["ratio"] = statistics.median(
            a / b for a, b in zip(samples[name]["import_ms"], samples[name]["botocore_ms"]))
        medians[name]["libraries_ratio"] = statistics.median(
            a / b for a, b in zip(samples[name]["import_ms"], samples[name]["libraries_ms"]))
    return medians


def run() -> list[tuple[str, float, str, float]]:
    result = measure()
    main, this = result["main"], result["this"]
    print(f"  package, this tree vs main at {BASELINE} (built side by side; medians of {ROUNDS} interleaved rounds):")
    print(f"    zip {this['zip_mb']:.1f} MB (main {main['zip_mb']:.1f}), unzipped {this['unzipped_mb']:.1f} MB "
          f"(main {main['unzipped_mb']:.1f}); botocore+boto3 in it {this['botocore_mb']:.1f} MB (main {main['botocore_mb']:.1f})")
    print(f"    cold import app {this['import_ms']:.0f} ms (main {main['import_ms']:.0f}); floors: import botocore.session "
          f"{this['botocore_ms']:.0f} ms (main's package {main['botocore_ms']:.0f}), interpreter alone "
          f"{this['interpreter_ms']:.0f} ms; import app / botocore.session {this['ratio']:.2f}x (main {main['ratio']:.2f}x)")
    print(f"    the libraries every request needs (botocore, PynamoDB, Chalice, pydantic and a model class): {this['libraries_ms']:.0f} ms "
          f"(main's package {main['libraries_ms']:.0f}); import app / that {this['libraries_ratio']:.2f}x "
          f"(main {main['libraries_ratio']:.2f}x)")
    print(f"    first signed request (stop) {this['stop_ms']:.0f} ms (main {main['stop_ms']:.0f}); floor: first DynamoDB "
          f"call of a fresh process {this['first_dynamodb_ms']:.0f} ms (main's package {main['first_dynamodb_ms']:.0f})")
    if "start_ms" in this and "start_ms" in main:
        print(f"    first POST /compute after it {this['start_ms']:.0f} ms (main {main['start_ms']:.0f})")
    else:
        print("    first POST /compute after it: not measured (the image's registry is out of reach here)")
    return [
        (f"deployment zip (main {main['zip_mb']:.1f} MB)", this["zip_mb"], "MB", ZIP_BUDGET_MB),
        (f"cold import app / import botocore.session, same package (main {main['ratio']:.2f}x)", this["ratio"], "x",
         IMPORT_RATIO_BUDGET),
        (f"first signed request of a fresh process (main {main['stop_ms']:.0f} ms)", this["stop_ms"], "ms",
         FIRST_SIGNED_BUDGET_MS),
    ]


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS), indent=1))
