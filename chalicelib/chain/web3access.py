"""One lazily built Web3 per configured chain, kept for the life of the container.

web3 costs about a second of import on a cold Lambda, so it is imported only when a request first
needs a chain. A node that does not answer, or answers for another chain than configured, is a
dependency failure (503 with a message naming the chain id, never the RPC URL, which may hold an
API key); a chain id the provider is not configured for is the caller's problem (400).
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping

from chalicelib.errors import BusinessError, ServiceUnavailable

if TYPE_CHECKING:
    from web3 import Web3

    from chalicelib.config import Settings

logger = logging.getLogger(__name__)


class UnknownChain(BusinessError):
    """The provider has no RPC for this chain id."""

    def __init__(self, chain_id: int):
        self.chain_id = chain_id
        super().__init__(f"chain {chain_id} is not supported by this provider")


@contextmanager
def rpc_errors(chain_id: int) -> Iterator[None]:
    """Turn transport failures and node-side errors of a block of RPC calls into a 503.

    Callers catch the answers they expect (TransactionNotFound, ...) inside the block, so only
    "the node did not give a usable answer" reaches this translation.
    """
    import requests
    from web3 import exceptions as w3e

    unreachable = (
        requests.exceptions.RequestException,
        OSError,
        w3e.ProviderConnectionError,
        w3e.RequestTimedOut,
        w3e.TimeExhausted,
        w3e.TooManyRequests,
    )
    try:
        yield
    except unreachable as error:
        logger.warning("chain %s did not answer: %s", chain_id, type(error).__name__)
        raise ServiceUnavailable(f"chain {chain_id} is not reachable") from None
    except (w3e.Web3RPCError, w3e.BadResponseFormat, w3e.BadFunctionCallOutput) as error:
        logger.warning("chain %s answered with an error: %s", chain_id, type(error).__name__)
        raise ServiceUnavailable(f"chain {chain_id} answered with an error") from None


class Chains:
    """Web3 per chain id from `{chain id: RPC URL}`; call it (`chains(8996)`) to get one.

    A Web3 is cached only after the node confirmed its chain id, so a misconfigured or down node
    is checked again on the next request instead of being remembered. Thread-safe enough for
    Lambda (one request at a time) and for `chalice local` (threads): the worst case is building
    the same Web3 twice.
    """

    def __init__(self, rpc_urls: Mapping[int, str], timeout: float):
        self._urls = {int(k): v for k, v in rpc_urls.items()}
        self._timeout = timeout
        self._web3: dict[int, "Web3"] = {}
        self._decimals: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Chains":
        return cls(settings.chains, settings.rpc_timeout)

    @property
    def chain_ids(self) -> list[int]:
        return sorted(self._urls)

    def __call__(self, chain_id: int) -> "Web3":
        return self.web3(chain_id)

    def web3(self, chain_id: int) -> "Web3":
        """The chain's Web3, connected and checked; UnknownChain (400) or ServiceUnavailable (503)."""
        cached = self._web3.get(chain_id)
        if cached is not None:
            return cached
        if chain_id not in self._urls:
            raise UnknownChain(chain_id)
        w3 = self._connect(self._urls[chain_id])
        with rpc_errors(chain_id):
            answered = int(w3.eth.chain_id)
        if answered != chain_id:
            logger.error("RPC of chain %s answers as chain %s", chain_id, answered)
            raise ServiceUnavailable(
                f"chain {chain_id} is misconfigured: its RPC node answers for chain {answered}"
            )
        with self._lock:
            return self._web3.setdefault(chain_id, w3)

    def token_decimals(self, chain_id: int, token: str) -> int:
        """ERC20 decimals() of a token, read once per container (fees are in the token's units)."""
        key = (chain_id, token.lower())
        if key not in self._decimals:
            from chalicelib.chain import abi

            w3 = self.web3(chain_id)
            erc20 = w3.eth.contract(address=w3.to_checksum_address(token), abi=abi.load("ERC20Template"))
            with rpc_errors(chain_id):
                self._decimals[key] = int(erc20.functions.decimals().call())
        return self._decimals[key]

    def _connect(self, url: str) -> "Web3":
        from web3 import Web3

        # No retries: a retried timeout multiplies the wait past API Gateway's 29 s limit, and
        # a 503 tells the client to retry anyway.
        provider = _bounded_provider()(url, request_kwargs={"timeout": self._timeout},
                                       exception_retry_configuration=None)
        return Web3(provider)


_provider_class: list[type] = []


def _bounded_provider() -> type:
    """HTTPProvider whose every call waits at most RPC_TIMEOUT and never past the request's
    deadline (chalicelib.budget), built on first use so web3 is imported only then."""
    if not _provider_class:
        from web3 import HTTPProvider

        from chalicelib import budget

        class BoundedHTTPProvider(HTTPProvider):
            def get_request_kwargs(self):  # type: ignore[no-untyped-def]
                kwargs = dict(super().get_request_kwargs())
                kwargs["timeout"] = budget.call_timeout(float(kwargs.get("timeout") or budget.RPC_TIMEOUT_SECONDS))
                return kwargs

        _provider_class.append(BoundedHTTPProvider)
    return _provider_class[0]
