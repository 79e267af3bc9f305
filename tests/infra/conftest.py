"""Fixtures of the deployment checks: the infrastructure template, one package built as `make
package` builds it per session, on a copy of the project (Chalice vendors requirements.txt with
pip, then infra.bytecode finishes the zip: 20 to 40 s), and a runc lab with the instances' OCI
runtime installed."""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from infra_helpers import TEMPLATE, Package, installed_files, launch_template_user_data, load_cfn, project_copy, run_package
from oci_lab import Lab, unavailable

from infra import network_rules


@pytest.fixture(scope="session")
def infra_template() -> dict[str, Any]:
    return load_cfn(TEMPLATE)


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """The dev stage packaged as `make package` makes it (infra.bytecode, then `chalice package
    --merge-template`), in a temporary folder."""
    work = tmp_path_factory.mktemp("chalice-package")
    return run_package(project_copy(work / "project"), work / "out")


@pytest.fixture(scope="session")
def installed_runtime(infra_template: dict[str, Any]) -> str:
    """The OCI runtime's source as the launch templates' user data installs it."""
    return installed_files(launch_template_user_data(infra_template, "CpuLaunchTemplate"))[network_rules.RUNTIME_PATH]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, installed_runtime: str) -> Iterator[Lab]:
    """Real runc, a static probe image, and the installed runtime under its names; skipped, with
    the reason, where containers cannot run (no root, no runc)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("oci")
    runtime = root / "libexec" / "oci-runtime"
    runtime.parent.mkdir()
    runtime.write_text(installed_runtime)
    made = Lab(root, runtime)
    try:
        reason = made.setup()
        if reason:
            pytest.skip(reason)
        yield made
    finally:
        made.cleanup()
