"""Fixtures of the deployment checks: the infrastructure template and one package built as `make
package` builds it per session, on a copy of the project (Chalice vendors requirements.txt with
pip, then infra.bytecode finishes the zip: 20 to 40 s)."""
from __future__ import annotations

from typing import Any

import pytest
from infra_helpers import TEMPLATE, Package, load_cfn, project_copy, run_package


@pytest.fixture(scope="session")
def infra_template() -> dict[str, Any]:
    return load_cfn(TEMPLATE)


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """The dev stage packaged as `make package` makes it (infra.bytecode, then `chalice package
    --merge-template`), in a temporary folder."""
    work = tmp_path_factory.mktemp("chalice-package")
    return run_package(project_copy(work / "project"), work / "out")
