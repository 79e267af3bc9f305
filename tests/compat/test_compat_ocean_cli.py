"""Ocean's CLI (oceanprotocol/ocean-cli, built from the checkout `OCEAN_CLI_SRC` names, on
ocean.js 8.6.2) against `make run`'s stack, as a new user runs it: `NODE_URL=<api>/node`, `RPC`,
`PRIVATE_KEY` and `ADDRESS_FILE` (the stack's address.json), and its real commands, one process
each: getComputeEnvironments, getDDO, startFreeCompute (published algorithm, and raw file
inputs), getJobStatus, computeStreamableLogs, downloadJobResults, depositEscrow, authorizeEscrow,
startCompute (datatokens bought from the sample's fixed-rate exchange, escrow-paid),
publishAlgo and publish (DDOs encrypted for this provider, found by its indexer within a
minute), startCompute of those (datatokens from their Dispensers) and stopCompute of the running
job, generateAuthToken and invalidateAuthToken.

The CLI prints and exits 0 whatever happened, so each step is judged by what it printed.

Workaround for the CLI's own fault (test only): its JsonRpcProvider keeps ethers 6's 250 ms
cache of identical reads, so two transactions sent back to back (depositEscrow: approve, then
deposit) read the same account nonce when blocks are mined instantly, and the second is refused
("nonce too low" / replaced). The CLI is run against a loopback relay to the stack's anvil
(NonceGapRelay) that answers each eth_sendRawTransaction 300 ms late, so the next nonce read
misses the cache; the chain, the CLI and its requests are otherwise unchanged.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from file_server import FileServer
from source_clients import OCEAN_CLI, built

pytestmark = pytest.mark.timeout(1800)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {7, 8, 31, 32, 41, 62, 70}


class NonceGapRelay:
    """A JSON-RPC relay on loopback that delays the answer to eth_sendRawTransaction by
    `delay` seconds (see the module docstring); every other call passes through at once."""

    def __init__(self, upstream: str, delay: float = 0.3):
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = urllib.request.Request(upstream, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as answer:
                    data = answer.read()
                if b"eth_sendRawTransaction" in body:
                    relay.sent += 1
                    time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.sent = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Cli:
    """`node dist/index.js <command> ...` in the CLI's build directory (it reads its contracts'
    artifacts relative to it), one shot (AVOID_LOOP_RUN), output without colours."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.transcript: list[str] = []

    def __call__(self, *args: str, timeout: float = 240) -> str:
        done = subprocess.run(["node", "dist/index.js", *args], cwd=self.home, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        output = ANSI.sub("", done.stdout + done.stderr)
        self.transcript.append(f"$ ocean-cli {' '.join(args)}\n{output}")
        return output


def _after(marker: str, output: str) -> str:
    assert marker in output, output[-3000:]
    return output.split(marker, 1)[1].strip().splitlines()[0].strip()


def _status(output: str) -> int | None:
    found = re.search(r"\bstatus: (\d+)", output)
    return int(found.group(1)) if found else None


def _output_index(output: str) -> int:
    """The index of the `output` result in getJobStatus's printed status."""
    for block in re.findall(r"\{[^{}]*\}", output):
        if re.search(r"type: '(output)'", block):
            return int(re.search(r"index: (\d+)", block).group(1))
    raise AssertionError(f"no output result in:\n{output[-3000:]}")


@pytest.fixture(scope="module")
def cli(local_stack, tmp_path_factory):
    home = built(OCEAN_CLI)
    relay = NonceGapRelay(local_stack["rpcUrl"])
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path_factory.mktemp("cli-home")),
        "PRIVATE_KEY": local_stack["consumerPrivateKey"], "RPC": relay.url,
        "NODE_URL": local_stack["providerUrl"] + "/node", "ADDRESS_FILE": local_stack["addressFile"],
        "AVOID_LOOP_RUN": "true", "INDEXING_RETRY_INTERVAL": "1000", "INDEXING_MAX_RETRIES": "90",
    }
    yield Cli(home, env)
    relay.close()


def _wait(cli: Cli, did: str, job_id: str, until, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while True:
        output = cli("getJobStatus", did, job_id, "")
        status = _status(output)
        if status is not None and until(status):
            return output
        assert time.monotonic() < deadline, f"job {job_id} stuck:\n{output[-2000:]}"
        time.sleep(1)


@pytest.fixture(scope="module")
def environment(cli) -> dict:
    output = cli("getComputeEnvironments")
    environments = json.loads(_after("Exiting compute environments:", output))
    return next(env for env in environments if env.get("free"))


def test_cli_lists_the_environments(environment, local_stack):
    assert environment["consumerAddress"] == local_stack["providerAddress"]
    assert str(local_stack["chainId"]) in environment["fees"]


def test_cli_get_ddo_reads_the_indexed_asset(cli, local_stack):
    output = cli("getDDO", local_stack["dataset"]["did"])
    assert f"id: '{local_stack['dataset']['did']}'" in output, output[-3000:]
    assert "datatokens" in output and local_stack["dataset"]["datatoken"].lower() in output.lower()
    assert "indexedMetadata" in output and local_stack["providerUrl"] + "/node" in output


@pytest.fixture(scope="module")
def free_job(cli, environment, local_stack) -> dict:
    """startFreeCompute with the published sample algorithm, to status 70."""
    did = local_stack["dataset"]["did"]
    started = cli("startFreeCompute", did, local_stack["algorithm"]["did"], environment["id"])
    job_id = _after("Compute started.  JobID:", started)
    finished = _wait(cli, did, job_id, lambda status: status in TERMINAL)
    return {"started": started, "jobId": job_id, "finished": finished}


def test_cli_free_compute_with_the_published_algorithm(free_job):
    assert _status(free_job["finished"]) == 70, free_job["finished"][-3000:]


def test_cli_streams_the_log_and_downloads_the_result(cli, free_job, tmp_path):
    logs = cli("computeStreamableLogs", free_job["jobId"])
    assert "Streamable Logs:" in logs and "rows" in logs.split("Streamable Logs:", 1)[1], logs[-2000:]
    index = _output_index(free_job["finished"])
    downloaded = cli("downloadJobResults", free_job["jobId"], str(index), str(tmp_path))
    path = Path(_after("File downloaded successfully:", downloaded))
    summary = json.loads(path.read_text())
    assert summary and "sepal_length" in json.dumps(summary), summary


def test_cli_free_compute_with_raw_file_inputs(cli, environment, local_stack):
    """A dataset and an algorithm given as `fileObject` (no DID): the sample files' URLs."""
    files = local_stack["filesUrl"]
    dataset = json.dumps([{"fileObject": {"type": "url", "url": f"{files}/iris.csv", "method": "get"}}])
    algorithm = json.dumps({
        "fileObject": {"type": "url", "url": f"{files}/algorithm.py", "method": "get"},
        "meta": {"container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim",
                               "checksum": "sha256:" + "a1" * 32}},
    })
    started = cli("startFreeCompute", dataset, algorithm, environment["id"])
    job_id = _after("Compute started.  JobID:", started)
    finished = _wait(cli, local_stack["dataset"]["did"], job_id, lambda status: status in TERMINAL)
    assert _status(finished) == 70, finished[-3000:]


@pytest.fixture(scope="module")
def paid_job(cli, environment, local_stack) -> dict:
    """depositEscrow + authorizeEscrow, then startCompute (orders and the escrow lock), running."""
    ocean, provider = local_stack["contracts"]["OceanToken"], local_stack["providerAddress"]
    deposit = cli("depositEscrow", ocean, "20")
    authorize = cli("authorizeEscrow", ocean, provider, "20", "3600", "10")
    resources = json.dumps([{"id": r["id"], "amount": r["min"]} for r in environment["resources"]])
    started = cli("startCompute", local_stack["dataset"]["did"], local_stack["algorithm"]["did"], environment["id"],
                  "300", ocean, resources, "--accept", "true", timeout=400)
    return {"deposit": deposit, "authorize": authorize, "started": started}


def test_cli_deposits_and_authorizes_in_escrow(paid_job):
    assert "Deposit successful" in paid_job["deposit"], paid_job["deposit"][-3000:]
    assert "Authorization successful" in paid_job["authorize"], paid_job["authorize"][-3000:]


def test_cli_paid_start_answers_the_escrow_lock(paid_job):
    started = paid_job["started"]
    assert "Compute job started successfully." in started, started[-4000:]
    job_id = _after("Compute started.  JobID:", started)
    lock_tx = _after("Agreement ID:", started)
    assert re.fullmatch(r"0x[0-9a-f]{64}", lock_tx), started[-3000:]
    paid_job["jobId"] = job_id


# An algorithm that runs long enough to be stopped: it logs a tick every half second for 4 minutes.
SLOW_ALGORITHM = b"""import time
for tick in range(480):
    print(f"tick {tick}", flush=True)
    time.sleep(0.5)
"""
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": "sha256:" + "a1" * 32}
INDEXED_WITHIN = 60.0


def _metadata(kind: str, name: str, files: list[dict], service: dict) -> dict:
    """A metadata file as the CLI's own samples write them (metadata/*.json): priced 0, so the
    CLI's publish gives the datatoken a Dispenser."""
    metadata = {"created": "2026-12-01T00:00:00Z", "updated": "2026-12-01T00:00:00Z", "type": kind, "name": name,
                "description": f"{name}, published with Ocean's CLI", "author": "compat test", "license": "MIT"}
    if kind == "algorithm":
        metadata["algorithm"] = {"language": "python", "format": "docker-image", "version": "0.1", "container": CONTAINER}
    return {
        "@context": ["https://w3id.org/did/v1"], "id": "did:op", "nftAddress": "", "version": "4.1.0", "chainId": 8996,
        "metadata": metadata,
        "services": [{"id": "0", "files": {"datatokenAddress": "0x0", "nftAddress": "0x0", "files": files},
                      "datatokenAddress": "", "serviceEndpoint": "http://ignored", "timeout": 86400, **service}],
        "indexedMetadata": {"event": {}, "nft": {"address": "", "name": "Ocean Data NFT", "symbol": "OCEAN-NFT",
                                                 "state": 5, "tokenURI": "", "owner": "", "created": ""},
                            "purgatory": {"state": False}, "stats": [{"orders": 0, "prices": [{"price": "0"}]}],
                            "datatokens": []},
    }


def _served_within(cli: Cli, local_stack: dict, did: str, since: float) -> float:
    """Seconds from `since` until this provider's DDO route serves `did` (at most INDEXED_WITHIN)."""
    url = f"{local_stack['providerUrl']}/node/api/aquarius/assets/ddo/{did}"
    while True:
        try:
            urllib.request.urlopen(url, timeout=10).close()
            return time.monotonic() - since
        except urllib.error.HTTPError as error:
            assert error.code == 404, error
        assert time.monotonic() - since < INDEXED_WITHIN, f"{did} not served {INDEXED_WITHIN:.0f} s after its publish"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cli_published(cli, local_stack, tmp_path_factory) -> dict:
    """`publishAlgo` and `publish` with the CLI, DDOs encrypted for this provider (its default):
    a slow algorithm, and a dataset that trusts any published algorithm; nobody registers them."""
    files = FileServer({"/slow.py": SLOW_ALGORITHM})  # the publisher's web server
    folder = tmp_path_factory.mktemp("cli-metadata")
    algorithm_file, dataset_file = folder / "slowAlgo.json", folder / "dataset.json"
    algorithm_file.write_text(json.dumps(_metadata(
        "algorithm", "slow ticks", [{"type": "url", "url": files.url("/slow.py"), "method": "GET"}], {"type": "access"})))
    dataset_file.write_text(json.dumps(_metadata(
        "dataset", "iris via the CLI", [{"type": "url", "url": f"{local_stack['filesUrl']}/iris.csv", "method": "GET"}],
        {"type": "compute", "compute": {"allowRawAlgorithm": False, "allowNetworkAccess": False,
                                        "publisherTrustedAlgorithmPublishers": ["*"],
                                        "publisherTrustedAlgorithms": [{"did": "*", "filesChecksum": "*",
                                                                        "containerSectionChecksum": "*"}]}})))
    began = time.monotonic()  # the publish command waits for the asset to be indexed itself
    published_algorithm = cli("publishAlgo", str(algorithm_file))
    algorithm = _after("Algorithm published. DID:", published_algorithm)
    served_algorithm = _served_within(cli, local_stack, algorithm, began)
    began = time.monotonic()
    published_dataset = cli("publish", str(dataset_file))
    dataset = _after("Asset published. ID:", published_dataset)
    served_dataset = _served_within(cli, local_stack, dataset, began)
    yield {"algorithm": algorithm, "dataset": dataset, "servedAfter": max(served_algorithm, served_dataset),
           "output": published_algorithm + published_dataset}
    files.close()


def test_cli_published_assets_are_served_within_a_minute(cli, cli_published, local_stack):
    print(f"CLI-published assets served at most {cli_published['servedAfter']:.1f} s after the publish command began",
          file=sys.stderr)
    for did in (cli_published["algorithm"], cli_published["dataset"]):
        output = cli("getDDO", did)
        assert f"id: '{did}'" in output and local_stack["providerUrl"] + "/node" in output, output[-3000:]


@pytest.fixture(scope="module")
def long_paid_job(cli, environment, local_stack, cli_published, paid_job) -> dict:
    """startCompute (orders from the new datatokens' Dispensers, the escrow lock) of the CLI-published
    slow algorithm on the CLI-published dataset, until it runs."""
    dataset, algorithm = cli_published["dataset"], cli_published["algorithm"]
    resources = json.dumps([{"id": r["id"], "amount": r["min"]} for r in environment["resources"]])
    started = cli("startCompute", dataset, algorithm, environment["id"], "300", local_stack["contracts"]["OceanToken"],
                  resources, "--accept", "true", timeout=400)
    assert "Compute job started successfully." in started, started[-4000:]
    job_id = _after("Compute started.  JobID:", started)
    running = _wait(cli, dataset, job_id, lambda status: status >= 40 or status in TERMINAL)
    return {"jobId": job_id, "dataset": dataset, "running": running}


def test_cli_stops_a_running_paid_job(cli, long_paid_job):
    assert _status(long_paid_job["running"]) == 40, long_paid_job["running"][-3000:]
    logs = cli("computeStreamableLogs", long_paid_job["jobId"])
    assert "tick 0" in logs, logs[-2000:]
    stopped = cli("stopCompute", long_paid_job["dataset"], long_paid_job["jobId"], "")
    assert _status(stopped) == 7, stopped[-3000:]
    assert _status(cli("getJobStatus", long_paid_job["dataset"], long_paid_job["jobId"], "")) == 7


def test_cli_generates_and_invalidates_a_token(cli):
    token = _after("Auth token successfully generated:", cli("generateAuthToken"))
    assert token.count(".") == 2
    invalidated = cli("invalidateAuthToken", token)
    assert "Auth token successfully invalidated" in invalidated, invalidated[-2000:]
