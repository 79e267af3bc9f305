"""A real headless browser (Debian's chromium) loads a page from another origin, which calls the
provider of `make run` with fetch as a dApp would: `GET /node`, the nonce, and signed status calls
(a v4 signature in the query string, and an `Authorization` token on Ocean Node's routes), with
`Content-Type: application/json` as ocean.js sends it, so every call is preflighted. The page
reads every answer, errors included: without CORS the browser would hide them all.

chromium is Debian's package, which `make test` installs when it runs as root (CI does); without
it the test is skipped with the reason, except in CI, where a missing browser fails it. The browser is driven over CDP by playwright-core from the test's
node project (node_projects)."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from node_projects import OCEAN_JS as PROJECT, installed
from signing import sign

pytestmark = pytest.mark.timeout(900)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>c2d dApp</title></head><body><script>
const params = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const json = { "Content-Type": "application/json" };
async function call(url, headers) {
  const response = await fetch(url, { headers: { ...json, ...(headers || {}) } });
  return { status: response.status, body: await response.json() };
}
(async () => {
  const out = {};
  try {
    const api = params.api;
    out.root = await call(api + "/node");
    out.nonce = await call(api + "/node/api/services/nonce?userAddress=" + params.consumer);
    out.signedStatus = await call(api + "/api/services/compute?" + params.signedQuery);
    out.tokenLogs = await call(api + "/node/api/services/computeStreamableLogs?jobId=nope&consumerAddress="
                               + params.consumer, { Authorization: params.token });
    out.badToken = await call(api + "/node/api/services/computeStreamableLogs?jobId=nope&consumerAddress="
                              + params.consumer, { Authorization: "not-a-token" });
    out.environments = await call(api + "/node/api/services/computeEnvironments");
  } catch (error) {
    out.error = String(error);
  }
  window.c2dDone = out;
})();
</script></body></html>
"""


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    reason = "chromium is not installed (make test installs Debian's chromium when run as root)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def other_origin(tmp_path):
    """A static server for the dApp page, on another port: another origin than the API."""
    (tmp_path / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()


def test_a_page_of_another_origin_reads_both_protocols(local_stack, other_origin, tmp_path):
    executable = chromium()
    installed(PROJECT)
    api = local_stack["providerUrl"]
    key = local_stack["consumerPrivateKey"]
    from chalicelib.auth.signatures import address_of_key

    consumer = address_of_key(key)
    nonce = int(time.time() * 1000)  # a JavaScript number holds it exactly (ns would not)
    token = requests.post(api + "/node/api/services/auth/token", timeout=10, json={
        "address": consumer, "nonce": str(nonce), "signature": sign(key, consumer + str(nonce) + "createAuthToken")}).json()["token"]
    nonce += 1
    signed_query = urllib.parse.urlencode({"consumerAddress": consumer, "nonce": nonce,
                                           "signature": sign(key, consumer + str(nonce))})
    params = {"api": api, "consumer": consumer, "signedQuery": signed_query, "token": token}
    page = other_origin + "/index.html#" + urllib.parse.quote(json.dumps(params))
    profile = tmp_path / "profile"
    profile.mkdir()
    done = subprocess.run(["node", str(PROJECT / "browser.mjs"), executable, page, str(tmp_path / "report.json"), str(profile)],
                          capture_output=True, text=True, timeout=180, cwd=PROJECT)
    assert done.returncode == 0, f"browser driver failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["pageOrigin"] == other_origin and "HeadlessChrome" in report["userAgent"]
    results = report["results"]
    assert "error" not in results, results
    assert results["root"]["status"] == 200 and "freeCompute" in results["root"]["body"]["serviceEndpoints"]
    assert results["nonce"] == {"status": 200, "body": {"nonce": nonce - 1}}
    assert results["signedStatus"]["status"] == 200 and isinstance(results["signedStatus"]["body"], list)
    assert results["tokenLogs"] == {"status": 404, "body": {"error": "Job not found"}}
    assert results["badToken"] == {"status": 401, "body": {"error": "Token is invalid."}}
    assert results["environments"]["status"] == 200 and results["environments"]["body"][0]["id"]
    assert requests.get(api + "/api/services/nonce", params={"userAddress": consumer}, timeout=10).json() == {"nonce": nonce}
