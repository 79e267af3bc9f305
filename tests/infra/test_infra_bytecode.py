"""The deployment package carries bytecode for the Lambda runtime's Python (issue 12):
`python -m infra.bytecode` builds the package where Chalice's build step caches it, with
unchecked-hash pycs, so `chalice package` (checked here, without credentials) and `chalice deploy`
(the same build step) both ship it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile

import pytest
from infra_helpers import MERGE_TEMPLATE, credential_free_env, project_copy

from infra.bytecode import MARKER

pytestmark = pytest.mark.timeout(300)
MB = 1_000_000
TAG = sys.implementation.cache_tag


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """The bytecode step alone, then a plain `chalice package`, in a copy of the project."""
    work = tmp_path_factory.mktemp("bytecode")
    project = project_copy(work / "project")
    step = subprocess.run([sys.executable, "-m", "infra.bytecode", "--stage", "dev"], cwd=project, env=credential_free_env(),
                          capture_output=True, text=True, timeout=280)
    assert step.returncode == 0, (step.stdout + step.stderr)[-3000:]
    out = work / "out"
    package = subprocess.run([sys.executable, "-c", "from chalice.cli import main; main()", "package", "--stage", "dev",
                              "--merge-template", str(project / "infra" / MERGE_TEMPLATE.name), str(out)],
                             cwd=project, env=credential_free_env(), capture_output=True, text=True, timeout=280)
    assert package.returncode == 0, (package.stdout + package.stderr)[-3000:]
    return work, out / "deployment.zip", package.stdout


def test_chalice_reuses_the_compiled_package(packaged):
    _, zip_path, output = packaged
    assert "Reusing existing deployment package" in output
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    assert MARKER in names
    for module in ("app.py", "chalicelib/http.py", "chalicelib/compute/jobs.py", "pydantic/main.py", "botocore/client.py",
                   "pynamodb/models.py", "web3/main.py", "chalice/app.py"):
        assert importlib.util.cache_from_source(module) in names, module
    assert zip_path.stat().st_size <= 40 * MB


def test_pycs_are_for_this_runtime_and_never_check_their_source(packaged):
    _, zip_path, _ = packaged
    with zipfile.ZipFile(zip_path) as archive:
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


def test_lambda_imports_the_bytecode_not_the_source(packaged):
    """Unzipped, sources made unimportable: with unchecked-hash pycs Python never reads them."""
    work, zip_path, _ = packaged
    folder = work / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    for source in ("app.py", "chalicelib/http.py"):
        (folder / source).write_text("raise SystemExit('the source was compiled, not the bytecode')\n")
    done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", PROBE, str(folder)], capture_output=True, text=True,
                          timeout=120, cwd=work, env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Chalice"
