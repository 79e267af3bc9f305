"""ocean.py (`ocean-lib` from PyPI, unchanged) runs the whole compute flow against `make run`'s stack.

ocean-lib pins web3 6 / eth-account 0.11 (the project uses 8 / 0.14), so it lives in its own
virtualenv under .local/, created once and reused until its lock changes (`make clean` removes
it); it installs from its lock, requirements-ocean-py.txt beside this file (exact versions with
hashes, pip --require-hashes; `make lock` updates it). It runs on Python 3.11, not the project's
3.13: ocean-lib pins coincurve 18, which has
no 3.13 wheel and does not build there. The 3.11 is found as make finds 3.13 (`python3.11` if it
runs, else pyenv's 3.11), or given as OCEAN_PY_PYTHON. tests/compat/ocean_py_driver.py runs in
that venv and writes what every `DataServiceProvider` call answered; this test checks it.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

OCEAN_LIB_VERSION = "3.1.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("ocean_py_driver.py")
LOCK_FILE = Path(__file__).with_name("requirements-ocean-py.txt")
INSTALL_TIMEOUT = 900
COMPAT_PYTHON = "3.11"  # what ocean-lib's pins install on
# The first test builds the venv (about 40 s here, more on a cold pip cache) and starts the stack.
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 300)


def compat_python() -> str:
    """A Python 3.11 that runs: OCEAN_PY_PYTHON, python3.11, pyenv's 3.11, else a clear failure."""
    pyenv = subprocess.run(["pyenv", "prefix", COMPAT_PYTHON], capture_output=True, text=True) \
        if shutil.which("pyenv") else None
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [os.environ.get("OCEAN_PY_PYTHON", ""), f"python{COMPAT_PYTHON}",
                  *([f"{pyenv.stdout.splitlines()[0]}/bin/python{COMPAT_PYTHON}"] if pyenv and pyenv.returncode == 0
                    and pyenv.stdout.strip() else []),
                  *sorted(glob.glob(f"{root}/versions/{COMPAT_PYTHON}.*/bin/python{COMPAT_PYTHON}"), reverse=True)]
    wanted = f"import sys; sys.exit(sys.version_info[:2] != ({COMPAT_PYTHON.replace('.', ', ')}))"
    for candidate in filter(None, candidates):
        try:
            if subprocess.run([candidate, "-c", wanted], capture_output=True, timeout=30).returncode == 0:
                return candidate
        except OSError:
            continue
    pytest.fail(f"ocean-lib {OCEAN_LIB_VERSION} needs Python {COMPAT_PYTHON}: install it (pyenv install {COMPAT_PYTHON}, "
                f"or python{COMPAT_PYTHON} on PATH) or set OCEAN_PY_PYTHON to one")


def ocean_lib_venv() -> tuple[Path, float]:
    """The venv's python, and how many seconds the install took (0 when it was already there).
    The venv is made again whenever the lock file changed since it was installed."""
    venv = REPO_ROOT / ".local" / f"ocean-lib-{OCEAN_LIB_VERSION}-py311-venv"
    digest = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:16]
    marker = venv / f".installed-{digest}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"ocean-lib-{OCEAN_LIB_VERSION}-py311-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if marker.exists():
            return venv / "bin" / "python", 0.0
        shutil.rmtree(venv, ignore_errors=True)
        began = time.monotonic()
        subprocess.run([compat_python(), "-m", "venv", str(venv)], check=True, timeout=300)
        install = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--require-hashes", "-r", str(LOCK_FILE)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        assert install.returncode == 0, f"pip install -r {LOCK_FILE.name} failed:\n{install.stderr[-3000:]}"
        took = time.monotonic() - began
        marker.write_text(f"{LOCK_FILE.name} installed in {took:.0f} s\n")
        return venv / "bin" / "python", took


@pytest.fixture(scope="module")
def ocean_py_report(local_stack, tmp_path_factory) -> dict:
    python, took = ocean_lib_venv()
    if took:
        print(f"ocean-lib {OCEAN_LIB_VERSION} venv installed in {took:.0f} s", file=sys.stderr)
    work = tmp_path_factory.mktemp("ocean_py")
    (work / "stack.json").write_text(json.dumps(local_stack))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(work)), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([str(python), str(DRIVER), str(work / "stack.json"), str(work / "report.json")],
                          capture_output=True, text=True, timeout=240, env=env, cwd=work)
    assert done.returncode == 0, f"ocean.py driver failed:\n{done.stderr[-6000:]}"
    return json.loads((work / "report.json").read_text())


def test_ocean_py_discovers_the_provider(ocean_py_report, local_stack):
    report, url = ocean_py_report, local_stack["providerUrl"]
    assert report["rootUri"] == url and report["validProvider"] is True
    assert report["providerAddress"] == local_stack["providerAddress"]
    methods = {name: method for name, (method, _) in report["endpoints"].items()}
    assert methods == {"nonce": "GET", "computeEnvironments": "GET", "initializeCompute": "POST", "computeStart": "POST",
                       "computeStatus": "GET", "computeStop": "PUT", "computeDelete": "DELETE", "computeResult": "GET",
                       "encrypt": "POST", "create_auth_token": "GET", "delete_auth_token": "DELETE"}
    assert all(endpoint.startswith(url + "/api/services/") for _, endpoint in report["endpoints"].values())
    assert "ocean-c2d-cpu" in report["environments"]
    # the samples' serviceEndpoint is <api>/node (for Ocean Node's clients too): ocean.py appends the
    # v4 paths to it, and every call of its flow below goes there (chalicelib.node.ocean_py)
    assert report["serviceEndpoint"] == url + "/node"
    assert report["endpointsFromService"] == {name: [method, endpoint.replace(url, url + "/node", 1)]
                                              for name, (method, endpoint) in report["endpoints"].items()}


def test_ocean_py_runs_a_job_and_fetches_its_result(ocean_py_report, local_stack):
    report = ocean_py_report
    fee = report["initialize"]["datasets"][0]["providerFee"]
    assert int(fee["providerFeeAmount"]) > 0 and fee["providerFeeAddress"] == local_stack["providerAddress"]
    assert "providerFee" in report["initialize"]["algorithm"]
    assert report["orders"] == ["startOrder", "startOrder"]
    started = report["start"]
    assert started["status"] in (1, 10, 20, 30, 40) and started["owner"] == _consumer(local_stack) and started["jobId"]
    assert report["statusesSeen"][-1] == 70 and report["status"]["jobId"] == started["jobId"]
    assert [r["type"] for r in report["status"]["results"]].count("output") == 1
    result = json.loads(report["result"])
    (summary,) = result["inputs"].values()
    assert summary["rows"] == 60 and result["algoCustomData"] == {"requestedBy": "ocean.py"}
    (algorithm_log,) = report["resultLogs"]
    assert "read 60 rows" in algorithm_log


def test_ocean_py_stops_and_deletes_jobs(ocean_py_report):
    report = ocean_py_report
    assert report["stopFinished"]["status"] == 70, "stopping a finished job changes nothing"
    assert report["delete"]["status"] == 8 and report["delete"]["jobId"] == report["start"]["jobId"]
    assert report["stop"]["status"] == 7 and report["statusAfterStop"]["status"] == 7
    assert report["deleteStopped"]["status"] == 8
    assert report["deleteRunning"]["status"] == 8 and report["statusAfterDelete"]["status"] == 8


def test_ocean_py_reuses_orders_one_job_each(ocean_py_report):
    """ocean.py's pay_for_compute_service with orders that already started a job: the provider asks
    for a fee again (one order starts one job) and names the startOrder as validOrder, so that
    ocean.py's reuseOrder yields an order the provider accepts; a fresh unused order is offered
    back as it is."""
    report = ocean_py_report
    first, again, third, third_again = report["transferTxIds"]
    assert [item.get("validOrder") for item in (*report["initializeAgain"]["datasets"],
                                                report["initializeAgain"]["algorithm"])] == first
    assert report["ordersAgain"] == ["reuseOrder", "reuseOrder"]
    assert [item.get("validOrder") for item in (*report["initializeThird"]["datasets"],
                                                report["initializeThird"]["algorithm"])] == first
    assert report["ordersThird"] == ["reuseOrder", "reuseOrder"]
    assert report["ordersThirdAgain"] == ["reused as is", "reused as is"] and third_again == third
    assert len({*first, *again, *third}) == 6


def _consumer(stack: dict) -> str:
    from chalicelib.auth.signatures import address_of_key

    return address_of_key(stack["consumerPrivateKey"])
