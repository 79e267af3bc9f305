"""Who may start jobs on an environment: its `access` for paid jobs, its free tier's for free ones
(compute.environments.Access, Ocean Node's `access {addresses, accessLists}`).

An AccessList (ocean-contracts `AccessList`, deployed by `AccessListFactory`) is a soulbound
ERC721 its owner mints to the addresses it lists and burns to unlist them: holding one of its
tokens (`balanceOf(address) > 0`) is being on the list. Membership changes, so it is read when a
job starts, never cached. Unlike Ocean Node, a chain that does not answer is a 503, not a silent
refusal, addresses compare whatever their case, and `addresses` alone restrict (Ocean Node
admits everyone when `accessLists` is null, whatever `addresses` says).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Collection

from chalicelib.auth.signatures import to_checksum_address
from chalicelib.compute.environments import Access
from chalicelib.errors import ConfigurationError, Forbidden

if TYPE_CHECKING:
    from web3 import Web3

DENIED = "Access denied"


class AccessLists:
    """Checks an `Access` on chain: `web3_for(chain_id)` a connected Web3 of a served chain."""

    def __init__(self, web3_for: Callable[[int], "Web3"], chain_ids: Collection[int]):
        self._web3_for = web3_for
        self._chain_ids = frozenset(chain_ids)

    def require(self, access: Access, consumer: str, where: str) -> None:
        """Refuse (403 "Access denied", as Ocean Node answers) a consumer `access` does not admit.
        `where` names the environment (or its free tier) in configuration errors."""
        if not self.admits(access, consumer, where):
            raise Forbidden(DENIED)

    def admits(self, access: Access, consumer: str, where: str) -> bool:
        if access.is_open or consumer.lower() in access.addresses:
            return True
        return any(self._holds(chain_id, contract, consumer, where) for chain_id, contract in access.lists)

    def _holds(self, chain_id: int, contract: str, consumer: str, where: str) -> bool:
        from chalicelib.chain import abi
        from chalicelib.chain.web3access import rpc_errors

        if chain_id not in self._chain_ids:
            raise ConfigurationError(f"{where}: an access list is on chain {chain_id}, which CHAINS does not name")
        w3 = self._web3_for(chain_id)
        listed = w3.eth.contract(address=to_checksum_address(contract), abi=abi.load("AccessList"))
        with rpc_errors(chain_id):
            return int(listed.functions.balanceOf(to_checksum_address(consumer)).call()) > 0
