"""chalicelib.job_key: the per-job key seals a manifest only its job opens, and signs events only
its job's runner can have sent, whatever EventBridge does to the JSON on the way."""
from __future__ import annotations

import json

import pytest

from chalicelib.job_key import (
    SealError,
    check_job_key,
    detail_signed,
    new_job_key,
    open_manifest,
    seal_manifest,
    sign_detail,
)

MANIFEST = {"jobId": "job-a", "inputs": [{"did": "did:op:x", "files": [{"type": "url", "url": "https://data.example/s3cr3t"}]}]}


def test_a_sealed_manifest_opens_only_with_its_jobs_key_and_id():
    key_a, key_b = new_job_key(), new_job_key()
    sealed = seal_manifest(key_a, "job-a", MANIFEST)
    assert b"s3cr3t" not in sealed and b"data.example" not in sealed
    assert json.loads(sealed)["format"] == "c2d-sealed-manifest-v1"
    assert open_manifest(key_a, "job-a", sealed) == MANIFEST
    with pytest.raises(SealError):
        open_manifest(key_b, "job-a", sealed)  # another job's key
    with pytest.raises(SealError):
        open_manifest(key_a, "job-b", sealed)  # the same key, another job's id (associated data)
    envelope = json.loads(sealed)
    flipped = bytearray(__import__("base64").b64decode(envelope["sealed"]))
    flipped[3] ^= 1
    envelope["sealed"] = __import__("base64").b64encode(bytes(flipped)).decode()
    with pytest.raises(SealError):
        open_manifest(key_a, "job-a", json.dumps(envelope).encode())  # changed in S3
    for not_sealed in (json.dumps(MANIFEST).encode(), b"not json", b"[]", b'{"format": "c2d-sealed-manifest-v1"}'):
        with pytest.raises(SealError):
            open_manifest(key_a, "job-a", not_sealed)


def test_two_seals_of_one_manifest_differ():
    key = new_job_key()
    assert seal_manifest(key, "j", MANIFEST) != seal_manifest(key, "j", MANIFEST)  # a fresh nonce each time


@pytest.mark.parametrize("bad", ["", "x", new_job_key() + "A", "!" * 43, None, 7])
def test_malformed_keys_are_refused(bad):
    with pytest.raises(SealError):
        check_job_key(bad)  # type: ignore[arg-type]
    assert not detail_signed(bad, {"jobId": "j", "signature": "0" * 64})  # type: ignore[arg-type]


def test_a_signature_survives_reserialisation_and_nothing_else():
    key = new_job_key()
    detail = {"jobId": "job-a", "status": 70, "at": 1_700_000_000, "reason": "café ✓",
              "results": [{"filename": "out.csv", "filesize": 3, "type": "output", "key": "jobs/job-a/outputs/out.csv"}]}
    detail["signature"] = sign_detail(key, detail)
    # EventBridge hands the handler a re-serialised object: other key order, spacing, escapes
    reordered = json.loads(json.dumps(dict(reversed(list(detail.items()))), ensure_ascii=False, indent=2))
    assert detail_signed(key, reordered)
    assert not detail_signed(new_job_key(), reordered)  # another job's key
    for change in ({"jobId": "job-b"}, {"status": 31}, {"at": 1}, {"extra": True},
                   {"results": []}, {"signature": "0" * 64}, {"signature": None}):
        assert not detail_signed(key, {**detail, **change}), change
    assert not detail_signed(key, {k: v for k, v in detail.items() if k != "signature"})
