"""The sample dataset (a small CSV) and algorithm that `make run` publishes, served to the job
runner by a static file server on loopback, as a data owner's web server would serve them."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from devstack.devchain import DevChain
from devstack.orders import mint_datatokens
from devstack.pricing import create_dispenser, create_fixed_rate
from devstack.publish import PublishedAsset, publish_asset, Encrypt

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
# The image the algorithm would run in on AWS Batch; locally the host's python runs it.
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + hashlib.sha256(b"python:3.11-slim sample digest placeholder").hexdigest(),
}


@dataclass
class Samples:
    dataset: PublishedAsset
    algorithm: PublishedAsset
    held: Optional[PublishedAsset] = None  # the same data, its results released only when its publisher agrees


def publish_samples(chain: DevChain, encrypt: Encrypt, provider_url: str, files_url: str,
                    with_held: bool = False) -> Samples:
    """Publish the algorithm, then the dataset trusting it (and, `with_held`, a copy of it whose
    compute options require its publisher's release: chalicelib.owner.release), with
    `serviceEndpoint` `<api>/node` (ocean.js >= 4 and Ocean's CLI then speak Ocean Node's protocol
    there, ocean.py and ocean.js 3 drop the path and use `/`: one asset serves both); give each
    datatoken a Dispenser and a fixed-rate exchange in OCEAN (how Ocean's clients get datatokens),
    and the consumer some."""
    provider_url = provider_url.rstrip("/") + "/node"
    from chalicelib.compute.algorithm_rules import container_section_checksum, content_checksum

    algorithm_code = (SAMPLE_DIR / "algorithm.py").read_bytes()

    algorithm = publish_asset(
        chain.w3, chain.publisher, chain.contracts, name="CSV summary statistics", asset_type="algorithm",
        files=[{"type": "url", "url": f"{files_url}/algorithm.py", "method": "GET"}],
        provider_url=provider_url, provider_address=chain.provider.address, encrypt=encrypt,
        algorithm={"language": "python", "version": "3.11", "container": CONTAINER},
        description="Row counts, means, minima and maxima of every column of CSV inputs.",
    )
    trusted: dict[str, Any] = {
        "did": algorithm.did,
        "filesChecksum": content_checksum(algorithm_code),
        "containerSectionChecksum": container_section_checksum(CONTAINER),
    }
    compute = {"allowRawAlgorithm": True, "allowNetworkAccess": False, "publisherTrustedAlgorithms": [trusted]}

    def iris(name: str, options: dict[str, Any], description: str) -> PublishedAsset:
        return publish_asset(
            chain.w3, chain.publisher, chain.contracts, name=name,
            files=[{"type": "url", "url": f"{files_url}/iris.csv", "method": "GET"}],
            provider_url=provider_url, provider_address=chain.provider.address, encrypt=encrypt,
            compute=options, description=description)

    dataset = iris("Iris measurements (sample)", compute, "60 rows of flower measurements; only aggregates may leave.")
    held = iris("Iris measurements (results released by their publisher)", {**compute, "releaseRequired": True},
                "The same rows; every job's results wait for the publisher's review.") if with_held else None
    for asset in (dataset, algorithm, *([held] if held else [])):
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address, 10 * 10**18)
        create_dispenser(chain.w3, chain.publisher, chain.contracts, asset.datatoken)
        create_fixed_rate(chain.w3, chain.publisher, chain.contracts, asset.datatoken)
    return Samples(dataset, algorithm, held)
