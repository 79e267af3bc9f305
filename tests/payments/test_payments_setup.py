"""Building the payments service from settings, and the cold-start rule for its modules."""
from __future__ import annotations

import subprocess
import sys

import pytest

from chalicelib.errors import ConfigurationError
from chalicelib.payments.setup import build_payments, escrow_addresses

ESCROW = "0xa513E6E4b8f2a923D98304ec87F64353C4D5C853"


def test_escrow_addresses_come_from_the_environment() -> None:
    assert escrow_addresses({}) == {}
    assert escrow_addresses({"ESCROW_CONTRACTS": '{"8996": "%s"}' % ESCROW}) == {8996: ESCROW}
    for bad in ("[1]", "{", '{"x": "0x1"}', '{"8996": "not an address"}'):
        with pytest.raises(ConfigurationError) as error:
            escrow_addresses({"ESCROW_CONTRACTS": bad})
        assert "ESCROW_CONTRACTS" in str(error.value) and "not an address" not in str(error.value)


def test_build_payments_binds_its_tables_and_reads_its_settings(aws) -> None:
    from chalicelib import services
    from chalicelib.payments import models

    env = {"ESCROW_CONTRACTS": '{"8996": "%s"}' % ESCROW, "ESCROW_QUEUE_WAIT": "60", "ESCROW_CLAIM_MARGIN": "30",
           "RESOURCE_PREFIX": "test"}
    payments = build_payments(services.settings(), services.chains(), env)
    assert payments.escrow.address(8996) == ESCROW and (payments.queue_wait, payments.claim_margin) == (60, 30)
    assert payments.payee == services.provider_address()
    assert models.EscrowPayment.Meta.table_name == "test-escrow-payments" and models.EscrowPayment.exists()
    with pytest.raises(ConfigurationError):
        build_payments(services.settings(), services.chains(), {**env, "ESCROW_QUEUE_WAIT": "-1"})


def test_importing_the_payments_modules_does_not_import_web3() -> None:
    code = (
        "import sys; import chalicelib.payments.service, chalicelib.payments.setup, chalicelib.payments.escrow, "
        "chalicelib.chain.transactions; assert 'web3' not in sys.modules and 'eth_account' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('web3', 'eth_account')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
