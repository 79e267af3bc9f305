"""bootstrap --batch: each environment's queue exists on moto, and running it again changes nothing."""
from __future__ import annotations

from chalicelib import aws as clients
from chalicelib.bootstrap import bootstrap, create_batch
from chalicelib.compute.environments import parse_environments

ENVIRONMENTS = parse_environments([
    {"id": "cpu-small", "chainIds": [8996], "jobQueue": "c2d-cpu", "nCPU": 2, "ramGB": 4, "diskGB": 20,
     "maxJobs": 4, "maxJobDuration": 600},
    {"id": "cpu-large", "chainIds": [8996], "jobQueue": "c2d-cpu", "nCPU": 8, "ramGB": 32, "diskGB": 20,
     "maxJobs": 2, "maxJobDuration": 600},
    {"id": "gpu", "chainIds": [8996], "jobQueue": "c2d-gpu", "nCPU": 4, "nGPU": 1, "ramGB": 16, "diskGB": 100,
     "maxJobs": 1, "maxJobDuration": 600},
])


def test_batch_queues_are_created_once(aws):
    from chalicelib import services

    assert create_batch(ENVIRONMENTS) == ["c2d-cpu-ce", "c2d-cpu", "c2d-gpu-ce", "c2d-gpu"]
    assert "c2d-cpu" not in bootstrap(services.settings(), with_batch=True, environments=ENVIRONMENTS)
    batch = clients.client("batch")
    queues = {q["jobQueueName"]: q for q in batch.describe_job_queues()["jobQueues"]}
    assert set(queues) == {"c2d-cpu", "c2d-gpu"}
    assert all(q["state"] == "ENABLED" for q in queues.values())
    computes = {c["computeEnvironmentName"]: c for c in batch.describe_compute_environments()["computeEnvironments"]}
    assert set(computes) == {"c2d-cpu-ce", "c2d-gpu-ce"}
    cpu = computes["c2d-cpu-ce"]
    assert cpu["type"] == "MANAGED" and cpu["serviceRole"].endswith(":role/ocean-c2d-batch-service")
    assert cpu["computeResources"]["type"] == "SPOT"
    assert cpu["computeResources"]["maxvCpus"] == 2 * 4 + 8 * 2  # room for every environment's maxJobs
    assert computes["c2d-gpu-ce"]["computeResources"]["instanceTypes"] == ["g5"]
