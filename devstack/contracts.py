"""Deploy the Ocean v4 contracts (artifacts of the `ocean-contracts` PyPI package) to a dev chain.

Also the small transaction helpers the rest of devstack uses: every transaction is signed
locally (eth-account) with explicit gas, so nothing depends on node-side accounts or on
gas estimation, and a reverted transaction raises with its revert reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.logs import DISCARD
from web3.types import EventData, TxParams, TxReceipt

DEAD_ADDRESS = "0x000000000000000000000000000000000000dEaD"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEPLOY_GAS = 8_000_000
CALL_GAS = 3_000_000
OCEAN_UNIT = 10**18


@lru_cache(maxsize=None)
def load_artifact(name: str) -> dict[str, Any]:
    """The Hardhat artifact `artifacts/<name>.json` shipped by the ocean-contracts package."""
    return json.loads(files("artifacts").joinpath(f"{name}.json").read_text())


def load_abi(name: str) -> list[dict[str, Any]]:
    """ABI of an Ocean contract, e.g. load_abi("ERC20Template"). Stdlib only, cached."""
    return load_artifact(name)["abi"]


def as_account(signer: LocalAccount | str) -> LocalAccount:
    """Accept a LocalAccount or a private key hex string wherever a signer is needed."""
    return signer if isinstance(signer, LocalAccount) else Account.from_key(signer)


def contract(w3: Web3, name: str, address: str) -> Contract:
    """A web3 contract object for artifact `name` at `address`."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_abi(name))


def send(
    w3: Web3,
    signer: LocalAccount | str,
    tx: ContractFunction | ContractConstructor | TxParams,
    gas: int = CALL_GAS,
) -> TxReceipt:
    """Sign locally, send, wait for the receipt; raise RuntimeError with the reason on revert."""
    acct = as_account(signer)
    params: TxParams = {
        "from": acct.address,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
        "gas": gas,
        "gasPrice": w3.eth.gas_price,
        "chainId": w3.eth.chain_id,
    }
    if isinstance(tx, (ContractFunction, ContractConstructor)):
        params = tx.build_transaction(params)
    else:
        params = {**params, **tx}
    signed = acct.sign_transaction(params)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
    if receipt["status"] != 1:
        reason = _revert_reason(w3, params, receipt)
        raise RuntimeError(f"tx {tx_hash.to_0x_hex()} reverted: {reason}")
    return receipt


def _revert_reason(w3: Web3, params: TxParams, receipt: TxReceipt) -> str:
    """Replay a failed transaction as eth_call at its block to recover the revert message."""
    call = {k: v for k, v in params.items() if k in ("from", "to", "data", "value", "gas")}
    try:
        w3.eth.call(call, receipt["blockNumber"] - 1)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the exception text is what we want
        return str(exc)
    return "unknown (out of gas?)"


def deploy(
    w3: Web3, signer: LocalAccount | str, name: str, *args: Any, gas: int = DEPLOY_GAS
) -> str:
    """Deploy artifact `name` with constructor `args`; returns the checksummed address."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = send(w3, signer, factory.constructor(*args), gas=gas)
    return Web3.to_checksum_address(receipt["contractAddress"])


def decode_events(
    w3: Web3, receipt: TxReceipt, contract_name: str, event: str, address: str | None = None
) -> list[EventData]:
    """Decode the `event` logs of a receipt, keeping only those emitted by `address` if given.

    Uses errors=DISCARD because a receipt mixes logs of many contracts and events.
    """
    logs = contract(w3, contract_name, address or ZERO_ADDRESS).events[event]().process_receipt(
        receipt, errors=DISCARD
    )
    if address is None:
        return list(logs)
    return [log for log in logs if log["address"] == Web3.to_checksum_address(address)]


@dataclass(frozen=True)
class OceanContracts:
    """Addresses of the deployed Ocean v4 stack (checksummed)."""

    OceanToken: str
    OPFCommunityFeeCollector: str
    FactoryRouter: str
    ERC20Template: str
    ERC721Template: str
    ERC721Factory: str
    Escrow: str = ""  # Ocean Node's compute payments: Escrow(factoryRouter, opcCollector)
    Dispenser: str = ""  # free datatokens (Ocean Market's "free" pricing), known to the router
    FixedPrice: str = ""  # FixedRateExchange: datatokens for a base token at a fixed rate

    def as_dict(self) -> dict[str, str]:
        """Plain {contract name: address}."""
        return asdict(self)

    def address_file(self, chain_id: int, network: str = "development") -> dict[str, Any]:
        """The ocean-contracts `address.json` layout (ocean.py/ocean.js: ADDRESS_FILE)."""
        return {
            network: {
                "chainId": chain_id,
                "Ocean": self.OceanToken,
                "OPFCommunityFeeCollector": self.OPFCommunityFeeCollector,
                "Router": self.FactoryRouter,
                "ERC721Factory": self.ERC721Factory,
                "ERC20Template": {"1": self.ERC20Template},
                "ERC721Template": {"1": self.ERC721Template},
                "Escrow": self.Escrow,
                "Dispenser": self.Dispenser,
                "FixedPrice": self.FixedPrice,
                "startBlock": 0,
            }
        }


def deploy_ocean_stack(
    w3: Web3, deployer: LocalAccount | str, initial_ocean: int = 1_000_000 * OCEAN_UNIT
) -> OceanContracts:
    """Deploy OceanToken, fee collector, router, both templates, the NFT factory, the Escrow, and
    the Dispenser and FixedRateExchange (registered with the router, as Ocean's deployment does:
    clients buy datatokens only through them).

    The order and constructor arguments are those of Ocean's own deployment (DESIGN §6);
    the factory registers the templates as index 1 in its constructor, and the router must
    know the factory before createNftWithErc20 works. `initial_ocean` (wei) is minted to the
    deployer so tests can hand out OCEAN for paid fees.
    """
    owner = as_account(deployer)
    ocean = deploy(w3, owner, "OceanToken", owner.address)
    collector = deploy(w3, owner, "OPFCommunityFeeCollector", owner.address, owner.address)
    router = deploy(w3, owner, "FactoryRouter", owner.address, ocean, DEAD_ADDRESS, collector, [])
    erc20_tpl = deploy(w3, owner, "ERC20Template")
    erc721_tpl = deploy(w3, owner, "ERC721Template")
    factory = deploy(w3, owner, "ERC721Factory", erc721_tpl, erc20_tpl, router)
    send(w3, owner, contract(w3, "FactoryRouter", router).functions.addFactory(factory))
    escrow = deploy(w3, owner, "Escrow", router, collector)
    dispenser = deploy(w3, owner, "Dispenser", router)
    fixed_price = deploy(w3, owner, "FixedRateExchange", router)
    router_contract = contract(w3, "FactoryRouter", router)
    send(w3, owner, router_contract.functions.addDispenserContract(dispenser))
    send(w3, owner, router_contract.functions.addFixedRateContract(fixed_price))
    if initial_ocean:
        mint = contract(w3, "OceanToken", ocean).functions.mint(owner.address, initial_ocean)
        send(w3, owner, mint)
    return OceanContracts(
        OceanToken=ocean,
        OPFCommunityFeeCollector=collector,
        FactoryRouter=router,
        ERC20Template=erc20_tpl,
        ERC721Template=erc721_tpl,
        ERC721Factory=factory,
        Escrow=escrow,
        Dispenser=dispenser,
        FixedPrice=fixed_price,
    )


def hex_to_bytes(value: str) -> bytes:
    """0x-hex (or bare hex) as bytes: signatures, encrypted DDOs and order ids go to contracts so."""
    return bytes.fromhex(value.removeprefix("0x"))
