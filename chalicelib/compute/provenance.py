"""What a job's receipt and its publishers' audit need to know of its start, kept in the job
record (`provenance`) when the job is made: each input with its order and the owner of its data
NFT then, the algorithm (its DID and order, or the sha256 of its raw code) with the sha256 of
each of its files, the image as pinned (compute.image_digests), the environment's resources,
and the provider fee the orders paid."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Optional

from chalicelib.compute.input_rules import nft_field
from chalicelib.compute.plan import ComputePlan


def number(value: float) -> int | str:
    """Whole numbers as integers, others as decimal text: a receipt's JSON has no floats."""
    return int(value) if float(value).is_integer() else repr(float(value))


def publisher_of(asset: Any) -> Optional[str]:
    owner = nft_field(asset, "owner") if asset is not None else None
    return str(owner).lower() if owner else None


def input_services(plan: ComputePlan) -> list[tuple[str, Optional[str], Mapping[str, Any]]]:
    """(did, its publisher, its service in the DDO) of each input: what the release rule reads."""
    found = []
    for item in plan.datasets:
        services = item.asset.ddo.get("services") if item.asset is not None else None
        service = services[item.service_index] if isinstance(services, list) and 0 <= item.service_index < len(services) else {}
        found.append((item.did, publisher_of(item.asset), service if isinstance(service, Mapping) else {}))
    return found


def provenance(plan: ComputePlan) -> dict[str, Any]:
    algorithm = plan.algorithm
    environment = plan.environment
    image = algorithm.image.as_dict() if algorithm.image is not None else {
        "name": algorithm.container.get("image", ""), "tag": algorithm.container.get("tag", ""),
        "digest": algorithm.container.get("checksum", ""), "resolved": False}
    return {
        "inputs": [{"did": item.did, "serviceId": item.service_id, "order": item.transfer_tx_id,
                    "publisher": publisher_of(item.asset)} for item in plan.datasets],
        "algorithm": {
            "did": algorithm.did or None,
            "serviceId": algorithm.order.service_id if algorithm.order else None,
            "order": algorithm.order.transfer_tx_id if algorithm.order else None,
            "publisher": publisher_of(algorithm.order.asset) if algorithm.order else None,
            "rawcodeSha256": hashlib.sha256(algorithm.rawcode.encode()).hexdigest() if algorithm.rawcode else None,
            "files": list(algorithm.checksums),
        },
        "image": image,
        "resources": {"cpu": number(environment.n_cpu), "gpu": number(environment.n_gpu),
                      "ramGB": number(environment.ram_gb), "diskGB": number(environment.disk_gb)},
        "fee": dict(plan.fee) if plan.fee else None,
    }
