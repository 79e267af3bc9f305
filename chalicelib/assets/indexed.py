"""What an indexer knows of an asset beyond its DDO, read from the chain when the asset is
registered or re-indexed: Ocean Node's (and Aquarius') `datatokens` and `indexedMetadata`
{nft, event, purgatory, stats}. ocean.js orders with `datatokens[0].address` and shows the NFT's
owner and state and the prices from here; Ocean's CLI reads every DDO in this shape.

Prices (`stats[].prices`) are the datatoken's fixed-rate exchanges and dispensers as the chain
has them at indexing time: ocean.js reads them again from the chain before it buys.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from chalicelib.auth.signatures import to_checksum_address

if TYPE_CHECKING:
    from web3 import Web3

    from chalicelib.assets.onchain import MetadataEvent

logger = logging.getLogger(__name__)

UNIT = 10**18


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _amount(value: int, decimals: int = 18) -> str:
    """A token amount in whole tokens as Ocean's indexers write it ("1", "0.5")."""
    whole, fraction = divmod(int(value), 10**decimals)
    return f"{whole}.{str(fraction).rjust(decimals, '0').rstrip('0')}" if fraction else str(whole)


class IndexedMetadataReader:
    """Reads the on-chain facts of one asset; every call goes through `rpc_errors` (503)."""

    def __init__(self, web3_for: Callable[[int], "Web3"]):
        self._web3_for = web3_for

    def read(self, chain_id: int, nft_address: str, ddo: Mapping[str, Any], event: "MetadataEvent",
             state: int, owner: str) -> dict[str, Any]:
        """{"datatokens": [...], "indexedMetadata": {...}} of an asset whose current DDO came from `event`."""
        from chalicelib.chain import abi
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        nft = w3.eth.contract(address=to_checksum_address(nft_address), abi=abi.load("ERC721Template"))
        with rpc_errors(chain_id):
            block = w3.eth.get_block(event.block_number)
            sender = w3.eth.get_transaction(event.tx_hash)["from"] if event.tx_hash else ""
            name, symbol = nft.functions.name().call(), nft.functions.symbol().call()
            token_uri = _or_empty(lambda: nft.functions.tokenURI(1).call())
        datatokens, stats = [], []
        for service in ddo.get("services") or []:
            if not isinstance(service, Mapping) or not isinstance(service.get("datatokenAddress"), str):
                continue
            token = self._datatoken(w3, chain_id, service["datatokenAddress"], str(service.get("id", "")))
            if token is None:
                continue
            datatokens.append({key: token[key] for key in ("address", "name", "symbol", "serviceId")})
            stats.append({"datatokenAddress": token["address"], "name": token["name"], "symbol": token["symbol"],
                          "serviceId": token["serviceId"], "orders": token["orders"], "prices": token["prices"]})
        created = _iso(block["timestamp"])
        return {
            "datatokens": datatokens,
            "indexedMetadata": {
                "nft": {"address": to_checksum_address(nft_address), "name": name, "symbol": symbol, "owner": owner,
                        "state": state, "created": created, "tokenURI": token_uri},
                "event": {"txid": event.tx_hash, "block": event.block_number,
                          "from": to_checksum_address(sender) if sender else "",
                          "contract": to_checksum_address(nft_address), "datetime": created},
                "purgatory": {"state": False},
                "stats": stats,
            },
        }

    def _datatoken(self, w3: "Web3", chain_id: int, address: str, service_id: str) -> dict[str, Any] | None:
        from chalicelib.chain import abi
        from chalicelib.chain.web3access import rpc_errors

        try:
            token = w3.eth.contract(address=to_checksum_address(address), abi=abi.load("ERC20Template"))
        except ValueError:
            return None  # not an address: the DDO is judged elsewhere, nothing to index here
        with rpc_errors(chain_id):
            try:
                name, symbol = token.functions.name().call(), token.functions.symbol().call()
            except Exception:  # noqa: BLE001 - a contract that is no datatoken: indexed without it
                logger.info("service %s names %s, which is not a datatoken", service_id, address)
                return None
            prices = [*self._fixed_rates(w3, token), *self._dispensers(token)]
        return {"address": token.address, "name": name, "symbol": symbol, "serviceId": service_id,
                "orders": 0, "prices": prices}

    @staticmethod
    def _fixed_rates(w3: "Web3", token: Any) -> list[dict[str, Any]]:
        from chalicelib.chain import abi

        prices = []
        for contract_address, exchange_id in _or_empty(lambda: token.functions.getFixedRates().call()) or []:
            exchange = w3.eth.contract(address=contract_address, abi=abi.load("FixedRateExchange"))
            details = exchange.functions.getExchange(exchange_id).call()
            # (owner, datatoken, dtDecimals, baseToken, btDecimals, fixedRate, active, ...)
            if not details[6]:
                continue
            prices.append({"type": "fixedrate", "price": _amount(details[5]), "contract": contract_address,
                           "token": to_checksum_address(details[3]), "exchangeId": "0x" + bytes(exchange_id).hex()})
        return prices

    @staticmethod
    def _dispensers(token: Any) -> list[dict[str, Any]]:
        return [{"type": "dispenser", "price": "0", "contract": address}
                for address in _or_empty(lambda: token.functions.getDispensers().call()) or []]


def _or_empty(read: Callable[[], Any]) -> Any:
    """A read that older templates do not have answers ""."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - contract-level revert or missing function
        return ""


__all__ = ["IndexedMetadataReader"]
