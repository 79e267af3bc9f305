"""The operator's console against `make run`'s stack, in Debian's headless chromium: the URL
`make run` prints signs in with the stack's local admin key (and leaves the address bar without
it), the demo's job is listed, a running job is stopped with its Stop button (the provider then
shows it stopped, by the operator), and the screenshot is not blank."""
from __future__ import annotations

import json
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
import requests

from node_projects import OCEAN_JS as PROJECT, installed
from signing import sign
from test_browser_cors import chromium

pytestmark = pytest.mark.timeout(900)


def slow_free_job(stack: dict) -> str:
    """A free job on the CPU environment whose algorithm runs for minutes (raw code)."""
    from chalicelib.auth.signatures import address_of_key

    key = stack["consumerPrivateKey"]
    consumer = address_of_key(key)
    # milliseconds, as ocean.js's Date.now(): the consumer's key is shared with the other clients' tests,
    # and a nanosecond nonce would leave their millisecond nonces (and ocean.py's float parse) below it
    nonce = time.time_ns() // 1_000_000
    body = {"consumerAddress": consumer, "nonce": str(nonce), "environment": "ocean-c2d-cpu",
            "signature": sign(key, consumer + str(nonce) + "freeStartCompute"),
            "datasets": [{"documentId": stack["dataset"]["did"], "serviceId": stack["dataset"]["serviceId"]}],
            "algorithm": {"meta": {"language": "python", "version": "3", "rawcode": "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(1)\n",
                                   "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim",
                                                 "checksum": "sha256:" + "a1" * 32}}}}
    response = requests.post(stack["providerUrl"] + "/node/api/services/freeCompute", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()[0]["jobId"]


def wait_status(stack: dict, job_id: str, done, timeout: float = 120) -> dict:
    from chalicelib.auth.signatures import address_of_key

    consumer = address_of_key(stack["consumerPrivateKey"])
    deadline = time.monotonic() + timeout
    while True:
        jobs = requests.get(stack["providerUrl"] + "/node/api/services/compute",
                            params={"consumerAddress": consumer, "jobId": job_id}, timeout=30).json()
        if jobs and done(jobs[0]):
            return jobs[0]
        assert time.monotonic() < deadline, jobs
        time.sleep(1)


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of an 8-bit RGB(A) PNG (what chromium writes), unfiltered."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks += body
        position += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), header
    size = 3 if colour == 2 else 4
    raw, rows, previous = zlib.decompress(chunks), [], bytearray(width * size)
    stride = width * size
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up, corner = previous[x], previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(row[i] for i in range(0, stride) if i % size < 3) for row in rows]


def test_console_signs_in_lists_the_demo_job_and_stops_a_running_one(local_stack, tmp_path):
    executable = chromium()
    installed(PROJECT)
    from devstack import demo

    demo_job = demo.run(local_stack, poll_seconds=0.5)["jobId"]
    running = slow_free_job(local_stack)
    wait_status(local_stack, running, lambda job: job["status"] >= 40)
    profile = tmp_path / "profile"
    profile.mkdir()
    screenshot = tmp_path / "console.png"
    done = subprocess.run(["node", str(PROJECT / "console.mjs"), executable, local_stack["consoleUrl"], demo_job, running,
                           str(tmp_path / "report.json"), str(screenshot), str(profile)],
                          capture_output=True, text=True, timeout=240, cwd=PROJECT)
    assert done.returncode == 0, f"browser driver failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["signedInAs"] == local_stack["adminAddress"]
    assert "localKey" not in report["addressBar"] and report["sessionStored"]
    assert not any(local_stack["adminPrivateKey"][2:] in url for url in report["requests"])  # the key never left the page
    assert report["seen"].startswith("70 ") and report["runningBefore"].startswith("40 ")
    assert report["stoppedStatus"].startswith("7 ") and report["environments"] == 2
    assert report["consoleErrors"] == []
    stopped = wait_status(local_stack, running, lambda job: job["status"] == 7)
    assert stopped["terminationDetails"]["reason"] == "Job stopped by the provider's operator"
    width, height, rows = png_pixels(screenshot)
    assert (width, height) == (1280, 1600)
    values = [value for row in rows[::8] for value in row[::24]]
    mean = sum(values) / len(values)
    variance = sum((value - mean) ** 2 for value in values) / len(values)
    assert variance > 100, f"the screenshot looks blank (variance {variance:.1f})"
