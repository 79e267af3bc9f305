"""filesChecksum of trusted algorithms, computed by downloading inside the provider safely."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from chalicelib.compute.checksums import from_settings
from chalicelib.config import load_settings
from chalicelib.netsafe import FetchError

CODE = b"print('hello')\n"


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
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
    checksum = from_settings(settings(True))([{"type": "url", "url": server + "/a.py"}, {"type": "url", "url": server + "/b.py"}])
    assert checksum == hashlib.sha256(CODE).hexdigest() * 2


@pytest.mark.parametrize("url", ["/a.py", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/x"])
def test_private_and_metadata_addresses_are_refused(server, url):
    with pytest.raises(FetchError):
        from_settings(settings(False))([{"type": "url", "url": url if url.startswith("http") else server + url}])


def test_the_providers_own_bucket_is_refused(server):
    with pytest.raises(FetchError):
        from_settings(settings(True))([{"type": "s3", "bucket": settings(True).bucket, "objectKey": "jobs/x/manifest.json"}])
