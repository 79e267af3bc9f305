"""One call to get a running dev chain with the Ocean stack deployed and funded roles.

Shared by the pytest fixtures (tests/chain_fixtures.py) and the local stack (make run), so
both see the same accounts and addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from devstack.anvil import CHAIN_ID, Anvil, ensure_anvil
from devstack.contracts import OCEAN_UNIT, OceanContracts, as_account, deploy_ocean_stack
from devstack.publish import Encrypt, ecies_encrypt_for
from devstack.orders import transfer_ocean


@dataclass
class DevChain:
    """A running anvil with the Ocean v4 stack and funded role accounts.

    Roles are anvil dev accounts: deployer/publisher #0, consumer #1, other #2, and the
    provider #9 (the key the local stack and test settings use) unless given explicitly.
    """

    node: Anvil
    w3: Web3
    contracts: OceanContracts
    deployer: LocalAccount  # owns the contracts and publishes assets (= publisher)
    provider: LocalAccount  # the provider's key: signs provider fees, decrypts files
    consumer: LocalAccount
    other: LocalAccount  # a third party, for "not your order/job" cases

    @property
    def publisher(self) -> LocalAccount:
        """Publisher of the sample assets (the deployer)."""
        return self.deployer

    @property
    def rpc_url(self) -> str:
        """JSON-RPC URL of the node."""
        return self.node.rpc_url

    @property
    def chain_id(self) -> int:
        """Chain id (8996 unless overridden)."""
        return self.node.chain_id

    @property
    def provider_public_key(self) -> str:
        """Provider public key as 0x + 128 hex (x||y), what eciespy and eth-keys use."""
        return self.provider._key_obj.public_key.to_hex()

    def encrypt_for_provider(self) -> Encrypt:
        """In-process equivalent of the provider's POST /encrypt."""
        return ecies_encrypt_for(self.provider_public_key)

    def stop(self) -> None:
        """Stop the node."""
        self.node.stop()


PROVIDER_ACCOUNT_INDEX = 9


def start_devchain(
    port: int | None = None,
    *,
    provider_key: str | None = None,
    chain_id: int = CHAIN_ID,
    ocean_per_account: int = 10_000 * OCEAN_UNIT,
    log_path: Path | None = None,
    install: bool = False,
) -> DevChain:
    """Start anvil, deploy the stack, give the consumer and `other` OCEAN for paid fees.

    `provider_key` (hex) replaces dev account #9 as the provider, e.g. the configured
    PROVIDER_PRIVATE_KEY, so fees the tests sign match what the provider verifies; it is
    given ETH if it has none. `install=True` runs `npm ci` first if anvil is missing.
    """
    binary = ensure_anvil() if install else None
    node = Anvil(port, chain_id=chain_id, binary=binary, log_path=log_path).start()
    try:
        w3 = node.w3()
        accounts = node.accounts(PROVIDER_ACCOUNT_INDEX + 1)
        deployer, consumer, other = accounts[0], accounts[1], accounts[2]
        provider = as_account(provider_key) if provider_key else accounts[PROVIDER_ACCOUNT_INDEX]
        if w3.eth.get_balance(provider.address) == 0:
            w3.provider.make_request("anvil_setBalance", [provider.address, hex(10_000 * 10**18)])
        contracts = deploy_ocean_stack(w3, deployer)
        for acct in (consumer, other):
            transfer_ocean(w3, deployer, contracts.OceanToken, acct.address, ocean_per_account)
    except BaseException:
        node.stop()
        raise
    return DevChain(node, w3, contracts, deployer, provider, consumer, other)
