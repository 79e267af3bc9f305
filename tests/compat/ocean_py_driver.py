"""A consumer written with ocean.py (`ocean-lib` on PyPI) running the compute flow against our provider.

Runs in its own virtualenv (ocean-lib pins web3 6 and eth-account 0.11, the project uses 7/8),
started by tests/compat/test_compat_ocean_py.py with that venv's python:

    python ocean_py_driver.py STACK_JSON REPORT_JSON

Every provider call goes through ocean-lib's `DataServiceProvider` unchanged; orders go through
ocean-lib's own `Datatoken1.start_order` / `reuse_order`, built from what initializeCompute
answered, exactly as `OceanAssets.pay_for_compute_service` does. The DDOs come from the chain
(the NFT's MetadataCreated event), standing in for Aquarius, which this stack has not.

The script fails (non-zero exit, traceback on stderr) on the first call that does not work, and
otherwise writes REPORT_JSON: what each call answered, for the test to check (stdout is
ocean-lib's own chatter).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import enforce_typing
from eth_account import Account
from web3 import Web3

# ocean-lib declares Python 3.8 only: its runtime type checks (enforce_typing) call
# isinstance(x, typing.Any), which raises TypeError on Python 3.11. They are not part of the
# protocol, so they are turned off before ocean_lib is imported; every call is otherwise unchanged.
enforce_typing.enforce_types = lambda wrapped: wrapped

from ocean_lib.agreements.service_types import ServiceTypes
from ocean_lib.assets.ddo import DDO
from ocean_lib.data_provider.data_service_provider import DataServiceProvider
from ocean_lib.models.compute_input import ComputeInput
from ocean_lib.models.data_nft import DataNFT
from ocean_lib.models.datatoken1 import Datatoken1

TERMINAL = {7, 8, 31, 32, 41, 62, 70}
ENDPOINT_NAMES = ["nonce", "computeEnvironments", "initializeCompute", "computeStart", "computeStatus",
                  "computeStop", "computeDelete", "computeResult", "encrypt", "create_auth_token", "delete_auth_token"]


def chain_config(rpc_url: str) -> dict[str, Any]:
    """What ocean-lib's contract classes need: a web3 instance (ocean.py's get_config_dict would
    also want an address file, which only the token classes we do not use read)."""
    web3 = Web3(Web3.HTTPProvider(rpc_url))
    web3.strict_bytes_type_checking = False
    return {"web3_instance": web3, "CHAIN_ID": web3.eth.chain_id}


def published_ddo(config: dict[str, Any], datatoken: str) -> DDO:
    """The DDO as its NFT published it (MetadataCreated, plain JSON: flags 0), as Aquarius reads it."""
    nft_address = Datatoken1(config, datatoken).getERC721Address()
    nft = DataNFT(config, nft_address)
    (event,) = nft.contract.events.MetadataCreated().get_logs(fromBlock=0)
    return DDO.from_dict(json.loads(bytes(event.args.data).decode()))


def pay_for_compute(config: dict[str, Any], wallet, ocean_token: str, inputs: list[ComputeInput],
                    answer: dict[str, Any]) -> list[str]:
    """OceanAssets._start_or_reuse_order_based_on_initialize_response for each input, in the
    order initializeCompute answered (datasets, then the algorithm); returns what was done."""
    done = []
    items = [*answer["datasets"], answer["algorithm"]]
    for compute_input, item in zip(inputs, items):
        fee, valid_order = item.get("providerFee"), item.get("validOrder")
        if valid_order and not fee:
            compute_input.transfer_tx_id = valid_order
            done.append("reused as is")
            continue
        datatoken = Datatoken1(config, compute_input.service.datatoken)
        approve_fee(config, wallet, ocean_token, datatoken.address, fee)
        if valid_order:
            receipt = datatoken.reuse_order(valid_order, provider_fees=fee, tx_dict={"from": wallet})
            done.append("reuseOrder")
        else:
            receipt = datatoken.start_order(
                consumer=wallet.address, service_index=compute_input.ddo.get_index_of_service(compute_input.service),
                provider_fees=fee, tx_dict={"from": wallet})
            done.append("startOrder")
        assert receipt.status == 1, receipt
        compute_input.transfer_tx_id = receipt.transactionHash.hex()
    return done


def approve_fee(config: dict[str, Any], wallet, ocean_token: str, spender: str, fee: dict[str, Any]) -> None:
    """The datatoken pulls a non-zero provider fee from the payer; ocean-lib's start_order does not
    approve it, so the consumer does, as an ocean.py user with a paid environment must."""
    amount = int(fee["providerFeeAmount"])
    if amount:
        assert fee["providerFeeToken"].lower() == ocean_token.lower(), fee
        Datatoken1(config, ocean_token).approve(spender, amount, {"from": wallet})


def wait_until_terminal(did: str, job_id: str, service, wallet, timeout: float = 120) -> tuple[dict, list[int]]:
    """compute_job_status until the job ends; returns the last status and every status seen."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        status = DataServiceProvider.compute_job_status(did, job_id, service, wallet)
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        if status["status"] in TERMINAL:
            return status, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {seen}")


def run(stack: dict[str, Any]) -> dict[str, Any]:
    url, chain_id = stack["providerUrl"], int(stack["chainId"])
    wallet = Account.from_key(stack["consumerPrivateKey"])
    config = chain_config(stack["rpcUrl"])
    ocean_token = stack["contracts"]["OceanToken"]
    report: dict[str, Any] = {}

    # Root: ocean.py validates the provider, then looks every endpoint up by name.
    report["rootUri"] = DataServiceProvider.get_root_uri(url)
    report["validProvider"] = DataServiceProvider.is_valid_provider(url)
    endpoints = DataServiceProvider.get_service_endpoints(url)
    report["endpoints"] = {name: DataServiceProvider.build_endpoint(name, url) for name in ENDPOINT_NAMES}
    report["endpointNames"] = sorted(endpoints)
    report["providerAddress"] = DataServiceProvider.get_provider_address(url, chain_id)

    environments = DataServiceProvider.get_c2d_environments(url, chain_id)
    report["environments"] = [env["id"] for env in environments]
    environment = environments[0]

    dataset_ddo = published_ddo(config, stack["dataset"]["datatoken"])
    algorithm_ddo = published_ddo(config, stack["algorithm"]["datatoken"])
    service = dataset_ddo.get_service_by_id(stack["dataset"]["serviceId"])
    algorithm_service = algorithm_ddo.get_service_by_id(stack["algorithm"]["serviceId"])
    # make run publishes for both protocols at <api>/node; ocean.py drops the path and speaks v4 at /
    assert service.type == ServiceTypes.CLOUD_COMPUTE and service.service_endpoint == url + "/node"
    report["serviceEndpoint"] = service.service_endpoint
    report["endpointsFromService"] = {name: DataServiceProvider.build_endpoint(name, service.service_endpoint)
                                      for name in ENDPOINT_NAMES}
    dataset = ComputeInput(dataset_ddo, service)
    algorithm = ComputeInput(algorithm_ddo, algorithm_service)

    # Job 1: initializeCompute -> orders -> start -> status until done -> result -> stop -> delete.
    valid_until = int(time.time()) + 15 * 60
    answer = DataServiceProvider.initialize_compute(
        [dataset.as_dictionary()], algorithm.as_dictionary(), service.service_endpoint, wallet.address,
        environment["id"], valid_until).json()
    report["initialize"] = answer
    report["orders"] = pay_for_compute(config, wallet, ocean_token, [dataset, algorithm], answer)
    report["transferTxIds"] = [[dataset.transfer_tx_id, algorithm.transfer_tx_id]]

    job = DataServiceProvider.start_compute_job(
        dataset_compute_service=service, consumer=wallet, dataset=dataset, compute_environment=environment["id"],
        algorithm=algorithm, algorithm_custom_data={"requestedBy": "ocean.py"})
    report["start"] = job
    job_id = job["jobId"]
    status, seen = wait_until_terminal(dataset.did, job_id, service, wallet)
    report["status"], report["statusesSeen"] = status, seen
    output_index = next(item["index"] for item in status["results"] if item["type"] == "output")
    report["result"] = DataServiceProvider.compute_job_result(job_id, output_index, service, wallet).decode()
    report["resultLogs"] = [content.decode() for content in DataServiceProvider.compute_job_result_logs(
        dataset_ddo, job_id, service, wallet, "algorithmLog")]
    report["stopFinished"] = DataServiceProvider.stop_compute_job(dataset.did, job_id, service, wallet)
    report["delete"] = DataServiceProvider.delete_compute_job(dataset.did, job_id, service, wallet)

    # Job 2: ocean.py's "retry initialize" with the orders of job 1 and the same validUntil. They
    # started a job already, so the provider asks for a new fee and ocean.py pays it with
    # reuseOrder (a new transferTxId); that job is stopped while it runs, then deleted.
    report["initializeAgain"] = DataServiceProvider.initialize_compute(
        [dataset.as_dictionary()], algorithm.as_dictionary(), service.service_endpoint, wallet.address,
        environment["id"], valid_until).json()
    report["ordersAgain"] = pay_for_compute(config, wallet, ocean_token, [dataset, algorithm], report["initializeAgain"])
    report["transferTxIds"].append([dataset.transfer_tx_id, algorithm.transfer_tx_id])
    second = DataServiceProvider.start_compute_job(
        dataset_compute_service=service, consumer=wallet, dataset=dataset, compute_environment=environment["id"],
        algorithm=algorithm)
    report["stop"] = DataServiceProvider.stop_compute_job(dataset.did, second["jobId"], service, wallet)
    report["statusAfterStop"], _ = wait_until_terminal(dataset.did, second["jobId"], service, wallet)
    report["deleteStopped"] = DataServiceProvider.delete_compute_job(dataset.did, second["jobId"], service, wallet)

    # Job 3: the same again from job 2's reuseOrder transactions and a later validUntil (reuseOrder
    # again); asked once more before starting, the new orders are offered as they are. Deleted
    # while it runs (delete stops it first).
    for key in ("Third", "ThirdAgain"):
        report["initialize" + key] = DataServiceProvider.initialize_compute(
            [dataset.as_dictionary()], algorithm.as_dictionary(), service.service_endpoint, wallet.address,
            environment["id"], valid_until + 60).json()
        report["orders" + key] = pay_for_compute(config, wallet, ocean_token, [dataset, algorithm],
                                                 report["initialize" + key])
        report["transferTxIds"].append([dataset.transfer_tx_id, algorithm.transfer_tx_id])
    third = DataServiceProvider.start_compute_job(
        dataset_compute_service=service, consumer=wallet, dataset=dataset, compute_environment=environment["id"],
        algorithm=algorithm)
    report["deleteRunning"] = DataServiceProvider.delete_compute_job(dataset.did, third["jobId"], service, wallet)
    report["statusAfterDelete"] = DataServiceProvider.compute_job_status(dataset.did, third["jobId"], service, wallet)
    return report


def main() -> None:
    stack_path, report_path = sys.argv[1:3]
    with open(stack_path) as stack_file:
        report = run(json.load(stack_file))
    with open(report_path, "w") as report_file:
        json.dump(report, report_file, default=str)


if __name__ == "__main__":
    main()
