"""The consumer's side of Ocean Node's escrow (what ocean.js's EscrowContract does), and the
provider's payments service built as a fresh Lambda container would build it."""
from __future__ import annotations

from typing import Any

from chalicelib.chain.web3access import Chains
from chalicelib.payments.escrow import EscrowContract
from chalicelib.payments.service import EscrowPayments
from devstack.contracts import OCEAN_UNIT, contract, send
from devstack.devchain import DevChain
from escrow_fixtures import new_sender

CPU_PRICE, RAM_PRICE = "0.5", "0.1"  # OCEAN per unit per minute
RESOURCES = [{"id": "cpu", "amount": 2}, {"id": "ram", "amount": 4}]
PER_MINUTE = (2 * 5 + 4 * 1) * OCEAN_UNIT // 10  # 1.4 OCEAN
MAX_JOB_DURATION = 600  # 10 minutes: 14 OCEAN locked


def fees(chain: DevChain) -> dict[str, Any]:
    """An environment's Ocean Node `fees` for the dev chain's OCEAN."""
    return {str(chain.chain_id): [{"feeToken": chain.contracts.OceanToken,
                                   "prices": [{"id": "cpu", "price": float(CPU_PRICE)},
                                              {"id": "ram", "price": float(RAM_PRICE)}]}]}


def new_payments(chain: DevChain, **options: Any) -> EscrowPayments:
    chains = Chains({chain.chain_id: chain.rpc_url}, timeout=10)
    escrow = EscrowContract(chains, {chain.chain_id: chain.contracts.Escrow})
    sender_options = {k: options.pop(k) for k in ("clock", "stuck_after") if k in options}
    return EscrowPayments(escrow, new_sender(chain, **sender_options), chains.token_decimals, **options)


def quote(payments: EscrowPayments, chain: DevChain, max_job_duration: int = MAX_JOB_DURATION):
    return payments.quote(chain_id=chain.chain_id, token=chain.contracts.OceanToken, fees=fees(chain),
                          resources=RESOURCES, max_job_duration=max_job_duration, min_job_duration=60)


def escrow(chain: DevChain):
    return contract(chain.w3, "Escrow", chain.contracts.Escrow)


def deposit(chain: DevChain, amount: int, payer: Any = None) -> None:
    payer = payer or chain.consumer
    ocean = contract(chain.w3, "OceanToken", chain.contracts.OceanToken)
    send(chain.w3, payer, ocean.functions.approve(chain.contracts.Escrow, amount))
    send(chain.w3, payer, escrow(chain).functions.deposit(chain.contracts.OceanToken, amount))


def authorize(chain: DevChain, *, max_locked: int = 1000 * OCEAN_UNIT, max_seconds: int = 86_400, max_locks: int = 5,
              payer: Any = None) -> None:
    payer = payer or chain.consumer
    send(chain.w3, payer, escrow(chain).functions.authorize(
        chain.contracts.OceanToken, chain.provider.address, max_locked, max_seconds, max_locks))


def funds(chain: DevChain, payer: Any = None) -> tuple[int, int]:
    payer = payer or chain.consumer
    available, locked = escrow(chain).functions.getUserFunds(payer.address, chain.contracts.OceanToken).call()
    return int(available), int(locked)


def events(chain: DevChain, tx_hash: str, name: str) -> list[dict[str, Any]]:
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    logs = escrow(chain).events[name]().process_receipt(receipt, errors=__import__("web3").logs.DISCARD)
    return [dict(log["args"]) for log in logs]
