"""Helpers for the chain package's tests: the provider's view of the dev chain."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from chalicelib.chain.fees import ProviderFees
from chalicelib.chain.orders import OrderVerifier, VerifiedOrder
from chalicelib.chain.web3access import Chains
from chalicelib.compute.environments import Environment
from devstack.devchain import DevChain
from devstack.publish import PublishedAsset, publish_asset
from devstack.orders import mint_datatokens, start_order

PROVIDER_URL = "http://127.0.0.1:8030"
FILES = [{"type": "url", "url": "https://example.com/data.csv", "method": "GET"}]


def key_hex(account: Any) -> str:
    return "0x" + bytes(account.key).hex()


def environment(env_id: str = "ocean-c2d-cpu", *, price_min: float = 0, fee_tokens: dict[int, str] | None = None,
                free: bool = False) -> Environment:
    return Environment(
        id=env_id, description="test", chain_ids=(8996,), job_queue="q", cpu_type="", gpu_type="",
        n_cpu=1, n_gpu=0, ram_gb=1, disk_gb=1, price_min=price_min, max_jobs=1, max_job_duration=3600,
        storage_expiry=3600, fee_tokens=fee_tokens or {}, free=free,
    )  # fmt: skip


@dataclass
class Provider:
    """The provider under test, bound to the dev chain, plus ordering shortcuts for consumers."""

    chain: DevChain
    chains: Chains
    fees: ProviderFees
    env: Environment

    @property
    def w3(self):
        return self.chain.w3

    def verifier(self, clock: Callable[[], float] = time.time, provider_address: str | None = None) -> OrderVerifier:
        return OrderVerifier(self.chains, provider_address or self.chain.provider.address, clock=clock)

    def publish(self, *, timeout: int = 0, name: str = "dataset") -> PublishedAsset:
        return publish_asset(
            self.w3, self.chain.publisher, self.chain.contracts, name=name, files=FILES,
            provider_url=PROVIDER_URL, provider_address=self.chain.provider.address,
            encrypt=self.chain.encrypt_for_provider(), timeout=timeout,
        )  # fmt: skip

    def quote(self, asset: PublishedAsset, *, minutes: int = 10, env: Environment | None = None,
              fees: ProviderFees | None = None, now: int | None = None) -> dict[str, Any]:
        now = int(time.time()) if now is None else now
        return (fees or self.fees).quote(
            chain_id=self.chain.chain_id, environment=env or self.env, datatoken=asset.datatoken,
            service_id=asset.serviceId, valid_until=now + 60 * minutes if minutes else 0, now=now,
        )  # fmt: skip

    def order(self, asset: PublishedAsset, fee: dict[str, Any] | None = None, *, payer: Any = None,
              consumer: str | None = None) -> str:
        payer = payer or self.chain.consumer
        mint_datatokens(self.w3, self.chain.publisher, asset.datatoken, payer.address)
        return start_order(self.w3, payer, asset.datatoken, asset.serviceIndex, fee or self.quote(asset),
                           consumer=consumer)  # fmt: skip

    def verify(self, asset: PublishedAsset, tx: str, *, verifier: OrderVerifier | None = None,
               **overrides: Any) -> VerifiedOrder:
        args: dict[str, Any] = dict(
            chain_id=self.chain.chain_id, tx_id=tx, datatoken=asset.datatoken,
            service_index=asset.serviceIndex, service_id=asset.serviceId,
            service_timeout=asset.ddo["services"][0]["timeout"], consumer=self.chain.consumer.address,
            environment_id=self.env.id, resource="dataset",
        )  # fmt: skip
        args.update(overrides)
        return (verifier or self.verifier()).verify(**args)
