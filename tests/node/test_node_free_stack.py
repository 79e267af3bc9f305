"""Free compute at `/node` against `make run`'s stack (its API server, anvil, moto server and the
local backend running the real runner and the sample algorithm), as a consumer calls it: the
published sample algorithm on the sample dataset, and the consumer's own files (a `fileObject`
dataset, and an `algorithm.fileObject`), each to status 70 with the algorithm's real output."""
from __future__ import annotations

import pytest

from stack_consumer import iris_summary, own_consumer, run_free

CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": "sha256:" + "a1" * 32}


@pytest.fixture(scope="module")
def consumer(local_stack):
    return own_consumer(local_stack, 5)


def test_a_free_job_of_the_published_sample_algorithm(local_stack, consumer):
    """What ocean.js's docs and Ocean's CLI do: algorithm {documentId, serviceId}; it used to end 32."""
    dataset, algorithm = local_stack["dataset"], local_stack["algorithm"]
    done = run_free(consumer, [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]}],
                    {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]})
    iris_summary(done["output"], f"{dataset['did']}/0")
    assert done["status"]["inputDID"] == [dataset["did"]] and done["status"]["algoDID"] == algorithm["did"]


def test_a_free_job_of_the_consumers_own_files(local_stack, consumer):
    """A `fileObject` dataset (no DID) and the algorithm as `algorithm.fileObject` with its container."""
    files = local_stack["filesUrl"]
    done = run_free(consumer, [{"fileObject": {"type": "url", "url": f"{files}/iris.csv", "method": "GET"}}],
                    {"fileObject": {"type": "url", "url": f"{files}/algorithm.py", "method": "GET"},
                     "meta": {"container": CONTAINER}})
    iris_summary(done["output"], "raw-0/0")
    assert done["status"]["inputDID"] == ["raw-0"] and done["status"]["algoDID"] == ""


def test_the_published_algorithm_on_a_raw_file_beside_the_published_dataset(local_stack, consumer):
    files = local_stack["filesUrl"]
    dataset, algorithm = local_stack["dataset"], local_stack["algorithm"]
    done = run_free(consumer, [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]},
                               {"documentId": "", "serviceId": "",  # as Ocean's CLI sends a raw one
                                "fileObject": {"type": "url", "url": f"{files}/iris.csv", "method": "get"}}],
                    {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]})
    iris_summary(done["output"], f"{dataset['did']}/0")
    iris_summary(done["output"], "raw-1/0")
