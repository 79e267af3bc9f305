"""filesChecksum of trusted algorithms, computed by downloading inside the provider safely."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from chalicelib.compute.checksums import AlgorithmChecksums, from_settings
from chalicelib.errors import ServiceUnavailable
from chalicelib.config import load_settings
from chalicelib.netsafe import FetchError

CODE = b"print('hello')\n"


REQUESTS: list[str] = []


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            REQUESTS.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(CODE)))
            self.end_headers()
            self.wfile.write(CODE)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def settings(allow_private: bool):
    import os

    return load_settings({**os.environ, "ALLOW_PRIVATE_NETWORKS": "1" if allow_private else "0"})


def test_checksum_is_the_joined_sha256_of_each_file(server):
    files = [{"type": "url", "url": server + "/a.py"}, {"type": "url", "url": server + "/b.py"}]
    hasher = from_settings(settings(True))
    assert hasher.digests(files) == [hashlib.sha256(CODE).hexdigest()] * 2
    assert hasher.files_checksum(files) == hashlib.sha256(CODE).hexdigest() * 2


@pytest.mark.parametrize("url", ["/a.py", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/x"])
def test_private_and_metadata_addresses_are_refused(server, url):
    with pytest.raises(FetchError):
        from_settings(settings(False)).digests([{"type": "url", "url": url if url.startswith("http") else server + url}])


def test_the_providers_own_bucket_is_refused(server):
    with pytest.raises(FetchError):
        from_settings(settings(True)).digests([{"type": "s3", "bucket": settings(True).bucket, "objectKey": "jobs/x/manifest.json"}])


def test_ten_unsigned_initialize_calls_fetch_the_algorithm_at_most_once(server):
    """Issue 12: initializeCompute of a trusted algorithm that pins its filesChecksum, through
    the real validator and hasher: ten calls, one download; a start still downloads afresh."""
    from test_validation_compute import (CONSUMER, ENVIRONMENTS, NOW, PROVIDER, make_algorithm, make_dataset,
                                         start_request, with_files)

    from chalicelib.compute.requests import InitializeComputeRequest
    from chalicelib.compute.plan import Resolved
    from chalicelib.compute.validation import ComputeValidator
    from chalicelib.http import validate

    algorithm = make_algorithm(11)
    files = ({"type": "url", "url": server + "/algo-11.py", "method": "GET"},)
    dataset = make_dataset(compute={"publisherTrustedAlgorithms": [
        {"did": algorithm.did, "filesChecksum": hashlib.sha256(CODE).hexdigest()}]})
    validator = ComputeValidator(PROVIDER, ENVIRONMENTS, files_checksum=from_settings(settings(True)), clock=lambda: NOW)
    request = validate(InitializeComputeRequest, {
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-1"}],
        "algorithm": {"documentId": algorithm.did, "serviceId": "algo-svc-11"},
        "compute": {"env": "cpu", "validUntil": NOW + 600}, "consumerAddress": CONSUMER})
    REQUESTS.clear()
    for _ in range(10):
        validator.validate_initialize(request, with_files(dataset), Resolved(algorithm, files))
    assert REQUESTS == ["/algo-11.py"]
    plan = validator.validate_start(start_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, files))
    assert REQUESTS == ["/algo-11.py"] * 2 and plan.algorithm.checksums == (hashlib.sha256(CODE).hexdigest(),)


def test_cache_misses_are_bounded_per_process_and_entries_expire(server):
    """Anything new costs a download, so new ones are capped per minute (503 beyond), and a
    cached digest is recomputed after its time."""
    now = [1000.0]
    base = from_settings(settings(True))
    hasher = AlgorithmChecksums(base._new_sources, clock=lambda: now[0], cache_seconds=600, misses_per_minute=3)
    REQUESTS.clear()
    for n in range(3):
        hasher.cached_digests([{"type": "url", "url": f"{server}/new-{n}.py"}])
    with pytest.raises(ServiceUnavailable):
        hasher.cached_digests([{"type": "url", "url": f"{server}/new-3.py"}])
    hasher.cached_digests([{"type": "url", "url": f"{server}/new-0.py"}])  # a hit costs nothing
    assert len(REQUESTS) == 3
    now[0] += 601
    hasher.cached_digests([{"type": "url", "url": f"{server}/new-0.py"}])
    assert len(REQUESTS) == 4


def test_concurrent_initialize_calls_share_one_download(server):
    """The local server is threaded (and so may be a warm Lambda behind a burst): ten callers
    asking at once for the same files wait for one download."""
    from concurrent.futures import ThreadPoolExecutor

    hasher = from_settings(settings(True))
    files = [{"type": "url", "url": f"{server}/burst.py"}]
    REQUESTS.clear()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: hasher.cached_digests(files), range(10)))
    assert answers == [[hashlib.sha256(CODE).hexdigest()]] * 10
    assert REQUESTS == ["/burst.py"]
    assert hasher._inflight == {}
