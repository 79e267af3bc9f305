"""Fuzzing from the OpenAPI document: schemathesis reads GET /spec of the running local stack and
throws generated requests at every operation, then checks every response against the document.

Phases: coverage (boundary and invalid values of every parameter, missing required parameters,
duplicated query parameters, wrong types, every undeclared method incl. TRACE and QUERY) and
fuzzing (random schema-valid and schema-invalid requests: unicode, huge strings, nested JSON).
About half of the schema-valid requests of signed routes are properly signed or carry an
AuthToken (hostile_fuzz_hooks), so the code behind the signature check is fuzzed too.

Checks: all of schemathesis' checks except positive_data_acceptance (a schema cannot say which
signatures, orders and assets are valid, so schema-valid requests are often rightly refused):
no 5xx, every status code, content type, header and body as documented, schema-invalid input
refused with a 4xx, undeclared methods answered with 405.

HOSTILE_FUZZ_EXAMPLES (default 40 per operation) and HOSTILE_FUZZ_SEED tune the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EXAMPLES = int(os.environ.get("HOSTILE_FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("HOSTILE_FUZZ_SEED", "20261128")

CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "413", "414"]

[checks.positive_data_acceptance]
enabled = false

[phases.coverage]
generate-duplicate-query-parameters = true
# OPTIONS is not unexpected: every path answers CORS preflights (tests/node)
unexpected-methods = ["get", "put", "post", "delete", "patch", "trace", "query"]
"""


def test_schemathesis_finds_nothing_on_any_operation(local_stack, tmp_path):
    base = local_stack["providerUrl"]
    spec = requests.get(base + "/spec", timeout=10).json()
    operations = sum(len(item) for item in spec["paths"].values())
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    report_path = tmp_path / "report.json"
    samples = {"dataset": local_stack.get("dataset"), "algorithm": local_stack.get("algorithm"),
               "environment": "ocean-c2d-cpu"} if local_stack.get("dataset") else {}
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "hostile_fuzz_hooks",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), str(HERE)]),
        "HOSTILE_SAMPLES": json.dumps(samples),
    }
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(tmp_path / "schemathesis.toml"),
        "--no-color", "run", base + "/spec",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES), "--seed", SEED,
        # one worker: CPython 3.11.7 can raise "AST constructor recursion depth mismatch" when two
        # threads parse source at once (gh-106905), which hypothesis does while describing strategies
        "--workers", "1",
        "--request-timeout", "30", "--generation-database", "none", "--output-truncate", "true",
        "--report", "json", "--report-json-path", str(report_path),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert report_path.exists(), output[-5000:]
    report = json.loads(report_path.read_text())
    cases = report["test_cases"]
    print(f"schemathesis: {cases['generated']} cases over {report['operations']['tested']} operations "
          f"in {report['running_time']:.0f} s, {cases['with_failures']} with failures")
    assert result.returncode == 0 and report["failures"] == [] and report["errors"] == [], output[-8000:]
    # Every operation but GET /spec itself, which schemathesis leaves out as the schema's own URL.
    assert report["operations"]["tested"] == report["operations"]["total"] == operations - 1
    assert cases["generated"] >= operations * 10 and cases["errored"] == 0
