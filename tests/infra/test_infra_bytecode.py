"""The deployment package carries bytecode for the Lambda runtime's Python (issue 12):
`python -m infra.bytecode` builds the package where Chalice's build step caches it, with
unchecked-hash pycs, so `chalice package` (checked here, without credentials) and `chalice deploy`
(the same build step) both ship it. `packaged` (conftest) runs the step, then a plain `chalice
package`."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile

import pytest

from infra.bytecode import MARKER

pytestmark = pytest.mark.timeout(300)
TAG = sys.implementation.cache_tag


def test_chalice_reuses_the_compiled_package(packaged):
    assert "Reusing existing deployment package" in packaged.package_output
    with zipfile.ZipFile(packaged.zip_path) as archive:
        names = set(archive.namelist())
        summary = json.loads(archive.read(MARKER))
    assert summary["runtime"] == TAG and summary["pycs"] > 300
    for module in ("app.py", "chalicelib/http.py", "chalicelib/compute/jobs.py", "pydantic/main.py", "botocore/client.py",
                   "pynamodb/models.py", "web3/main.py", "chalice/app.py", "pydantic/fields.py", "eth_keys/backends/coincurve.py",
                   "jwt/api_jwt.py", "ecies/__init__.py"):
        assert importlib.util.cache_from_source(module) in names, module


def test_pycs_are_for_this_runtime_and_never_check_their_source(packaged):
    with zipfile.ZipFile(packaged.zip_path) as archive:
        pycs = [name for name in archive.namelist() if name.endswith(f".{TAG}.pyc")]
        headers = {name: archive.read(name)[:8] for name in pycs}
    assert len(pycs) > 300
    for name, header in headers.items():
        assert header[:4] == importlib.util.MAGIC_NUMBER, name
        assert int.from_bytes(header[4:8], "little") == 0b01, f"{name}: not an unchecked-hash pyc"


PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import app, chalicelib.http
print(type(app.app).__name__)
"""


def test_lambda_imports_the_bytecode_not_the_source(packaged, tmp_path):
    """Unzipped, sources made unimportable: with unchecked-hash pycs Python never reads them."""
    work, zip_path = tmp_path, packaged.zip_path
    folder = work / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    for source in ("app.py", "chalicelib/http.py"):
        (folder / source).write_text("raise SystemExit('the source was compiled, not the bytecode')\n")
    done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", PROBE, str(folder)], capture_output=True, text=True,
                          timeout=120, cwd=work, env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Chalice"
