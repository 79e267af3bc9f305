"""ocean.js 9 (oceanprotocol/ocean.js v9.0.0-next.11, a pre-release not on the npm registry,
built from the checkout `OCEANJS9_SRC` names; tests/compat/source_clients pins what the registry
lacks) against `make run`'s stack at `<api>/node`: its token (signed over the node's peer id,
which it reads from `POST <node>/directCommand {"command":"status"}`), a token-authorised free
job to status 70, and the token's invalidation (signed `address + nonce + invalidateAuthToken`),
after which the token is refused. tests/compat/oceanjs9/driver.mjs makes the calls.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from node_projects import run_driver
from source_clients import OCEAN_JS9, built

pytestmark = pytest.mark.timeout(1800)
DRIVER = "driver.mjs"
OCEAN_JS9_DRIVER = Path(__file__).resolve().with_name("oceanjs9")


@pytest.fixture(scope="module")
def report(local_stack, tmp_path_factory) -> dict:
    library = built(OCEAN_JS9) / "dist" / "lib.module.mjs"
    return run_driver(OCEAN_JS9_DRIVER, DRIVER, local_stack, tmp_path_factory.mktemp("oceanjs9"), args=[str(library)])


def test_ocean_js9_reads_the_peer_id_and_gets_a_token(report, local_stack):
    from chalicelib.node.identity import peer_id

    status = report["nodeStatus"]
    assert status["id"] == peer_id(_provider_key(local_stack)) and status["address"] == local_stack["providerAddress"]
    assert report["token"].count(".") == 2


def test_ocean_js9_token_authorised_free_job_completes(report):
    assert report["finished"]["status"] == 70, report["finished"]
    assert 40 in report["statusesSeen"] or 70 in report["statusesSeen"]


def test_ocean_js9_invalidates_the_token(report):
    assert report["invalidate"] == {"success": True}
    assert report["afterInvalidation"] != "accepted", report["afterInvalidation"]


def _provider_key(stack: dict) -> str:
    from devstack.stack import DEV_PROVIDER_KEY

    return stack.get("providerPrivateKey", DEV_PROVIDER_KEY)
