"""Helpers of the assets tests (test-side only)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

SECRET_URL = "https://data.example.com/private/set-4f1c9a.csv?token=s3cr3t-7d2e"
FILES = [{"type": "url", "url": SECRET_URL, "method": "GET"}]


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def publish(chain, encrypt, *, flags: int = 0, name: str = "asset", files=None):
    """A dataset published on the test chain with `flags`, files encrypted with `encrypt`."""
    from devstack.publish import publish_asset

    return publish_asset(
        chain.w3, chain.publisher, chain.contracts, name=name, files=files or FILES,
        provider_url="http://provider.test", provider_address=chain.provider.address,
        encrypt=encrypt, flags=flags,
    )  # fmt: skip


def set_metadata_raw(chain, nft: str, data: bytes, metadata_hash: bytes, flags: int = 0, state: int = 0) -> str:
    """setMetaData with whatever data and hash the test wants (a tampering publisher)."""
    from devstack.contracts import DEPLOY_GAS, contract, send

    call = contract(chain.w3, "ERC721Template", nft).functions.setMetaData(
        state, "http://provider.test", chain.provider.address, bytes([flags]), data, metadata_hash, []
    )
    return send(chain.w3, chain.publisher, call, gas=DEPLOY_GAS)["transactionHash"].to_0x_hex()


def set_state(chain, nft: str, state: int) -> None:
    from devstack.contracts import contract, send

    send(chain.w3, chain.publisher, contract(chain.w3, "ERC721Template", nft).functions.setMetaDataState(state))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def error_of(excinfo: Any) -> Any:
    """The JSON body an exception becomes."""
    return excinfo.value.body()


def exception_chain_text(error: BaseException | None) -> str:
    """str and repr of an exception and of what a traceback would show with it (its cause, or
    the exception it was raised during unless `from None` suppressed that)."""
    parts = []
    while error is not None:
        parts += [str(error), repr(error), repr(getattr(error, "args", ()))]
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return " ".join(parts)
