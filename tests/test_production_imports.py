"""Production code (chalicelib/, app.py, runner/) never imports devstack: the local backend plugs
in through `services.register_local_dispatcher`, called by the process that runs it."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import services
from chalicelib.errors import ConfigurationError

REPO = Path(__file__).resolve().parent.parent
PRODUCTION = [REPO / "app.py", *sorted((REPO / "chalicelib").rglob("*.py")), *sorted((REPO / "runner").rglob("*.py"))]
DEVSTACK_NAME = re.compile(r"devstack(\..+)?")

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import chalicelib
names = [m.name for m in pkgutil.walk_packages(chalicelib.__path__, "chalicelib.")]
for name in names:
    importlib.import_module(name)
import app, runner, runner.__main__
from chalicelib import services
try:
    services.dispatcher()  # COMPUTE_BACKEND=local, and this process registered no backend
except Exception as error:
    problem = type(error).__name__
print(json.dumps({"modules": len(names), "problem": problem,
                  "devstack": sorted(m for m in sys.modules if m.split(".")[0] == "devstack")}))
"""


def test_importing_all_production_code_loads_no_devstack_module():
    env = {"PATH": "/usr/bin:/bin", "COMPUTE_BACKEND": "local", "RESULTS_BUCKET": "b", "AWS_DEFAULT_REGION": "us-east-1",
           "PROVIDER_PRIVATE_KEY": "0x" + "2a" * 32, "JWT_SECRET": "a-jwt-secret-long-enough-for-the-settings-0123",
           "CHAINS": '{"8996": "http://127.0.0.1:8545"}'}
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"modules": result["modules"], "problem": "ConfigurationError", "devstack": []}
    assert result["modules"] > 20


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: str(p.relative_to(REPO)))
def test_production_source_names_no_devstack_module(path):
    """Also imports not executed above (inside functions) and names handed to importlib."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        else:
            continue
        assert not [name for name in names if DEVSTACK_NAME.fullmatch(name)], (path, node.lineno)


@pytest.fixture
def local_backend(monkeypatch):
    monkeypatch.setenv("COMPUTE_BACKEND", "local")
    services.reset()
    yield
    services.register_local_dispatcher(None)
    monkeypatch.delenv("COMPUTE_BACKEND")
    services.reset()


def test_local_backend_without_a_registered_dispatcher_is_a_clear_configuration_error(local_backend):
    services.register_local_dispatcher(None)
    with pytest.raises(ConfigurationError, match="COMPUTE_BACKEND=local needs a local dispatcher registered"):
        services.dispatcher()


def test_the_registered_local_dispatcher_is_built_once_from_the_settings(local_backend):
    built = []

    class Registered:
        def __init__(self, settings):
            built.append(settings)

    services.register_local_dispatcher(Registered)
    first = services.dispatcher()
    assert isinstance(first, Registered) and services.dispatcher() is first
    assert built == [services.settings()] and built[0].compute_backend == "local"
