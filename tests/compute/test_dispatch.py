"""The Batch dispatcher's requests, checked by botocore's Stubber against AWS's own service model
(moto drops ecsProperties and resource overrides, DESIGN §6), and the algorithm container's
script run for real with a static busybox (tests/compute/test_dispatch_script.py)."""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from chalicelib.compute.algorithm_script import algorithm_command
from chalicelib.compute.batch_naming import is_stop_reason
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.dispatch import BatchDispatcher
from chalicelib.compute.job_placement import NETWORK_NOT_GRANTED, attempt_seconds, batch_timeout_seconds
from chalicelib.compute.environments import job_queues, parse_environments
from chalicelib.errors import ConfigurationError, ServiceUnavailable, ValidationError
from chalicelib.job_key import new_job_key

DIGEST = "sha256:" + "ab" * 32
RUNNER = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ocean-c2d-runner:1.0"
ROLE = "arn:aws:iam::123456789012:role/c2d-job"
MANIFEST = "s3://test-results/jobs/job-1/manifest.json"
ENVIRONMENTS = parse_environments([
    {"id": "cpu", "chainIds": [8996], "jobQueue": "c2d-cpu", "networkJobQueue": "c2d-cpu-net", "nCPU": 2,
     "ramGB": 4, "diskGB": 20, "maxJobs": 5, "maxJobDuration": 3600},
    {"id": "sealed", "chainIds": [8996], "jobQueue": "c2d-sealed", "nCPU": 2, "ramGB": 4, "diskGB": 20,
     "maxJobs": 5, "maxJobDuration": 3600},
    {"id": "gpu", "chainIds": [8996], "jobQueue": "arn:aws:batch:us-east-1:123456789012:job-queue/c2d-gpu",
     "nCPU": 8, "nGPU": 1, "ramGB": 30.5, "diskGB": 100, "maxJobs": 1, "maxJobDuration": 30},
])
PYTHON = AlgorithmContainer(image="python", tag="3.11-slim", checksum=DIGEST, entrypoint="python $ALGO")
QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/c2d-cpu"
KEY = new_job_key()


@pytest.fixture
def batch():
    client = boto3.session.Session().client("batch", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def dispatcher(client, **extra):
    return BatchDispatcher(client, runner_image=RUNNER, results_bucket="test-results",
                           job_role_arn=ROLE, **extra)


def definition_arn(name, revision=1):
    return f"arn:aws:batch:us-east-1:123456789012:job-definition/{name}:{revision}"


def expected_definition(name, uid=4000):
    """The whole RegisterJobDefinition request, written out: this is the contract with Batch."""
    mount = [{"sourceVolume": "data", "containerPath": "/data", "readOnly": False}]
    runner_env = [{"name": "ALGORITHM_UID", "value": str(uid)}, {"name": "C2D_REGION", "value": "us-east-1"},
                  {"name": "DATA_DIR", "value": "/data"}, {"name": "EVENT_BUS_NAME", "value": "default"},
                  {"name": "RESULTS_BUCKET", "value": "test-results"},
                  {"name": "RUNNER_EVENTS", "value": "eventbridge"}]
    small = [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}]
    return {
        "jobDefinitionName": name,
        "type": "container",
        "platformCapabilities": ["EC2"],
        "ecsProperties": {"taskProperties": [{
            "containers": [
                {"name": "configure", "image": RUNNER, "command": ["configure"], "essential": False,
                 "environment": runner_env, "mountPoints": mount, "resourceRequirements": small},
                {"name": "algorithm", "image": "python@" + DIGEST,
                 "command": ["/data/.c2d/busybox", "sh", "-c", algorithm_command("python $ALGO")[3]],
                 "essential": False,
                 "user": f"{uid}:{uid}",
                 "dependsOn": [{"containerName": "configure", "condition": "SUCCESS"}],
                 "environment": [{"name": "ALGO", "value": "/data/transformations/algorithm"}],
                 "mountPoints": mount,
                 "logConfiguration": {"logDriver": "awslogs", "options": {
                     "awslogs-group": "/aws/batch/job", "awslogs-stream-prefix": "c2d",
                     "awslogs-region": "us-east-1"}},
                 "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}]},
                {"name": "publish", "image": RUNNER, "command": ["publish"], "essential": True,
                 "dependsOn": [{"containerName": "algorithm", "condition": "COMPLETE"}],
                 "environment": runner_env, "mountPoints": mount, "resourceRequirements": small},
            ],
            "volumes": [{"name": "data"}],
            "taskRoleArn": ROLE,
        }]},
        "retryStrategy": {"attempts": 3, "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ]},
        "propagateTags": True,
        "tags": {"c2d:component": "algorithm-job-definition"},
    }


def expected_submit(arn, job_id="job-1", queue="c2d-cpu", environment="cpu", notice=None):
    configure_env = [{"name": "C2D_JOB_KEY", "value": KEY}, {"name": "JOB_ID", "value": job_id},
                     {"name": "MANIFEST_URI", "value": manifest(job_id)}]
    if notice:
        configure_env.insert(1, {"name": "C2D_NOTICE", "value": notice})
    return {
        "jobName": f"c2d-{job_id}",
        "jobQueue": queue,
        "jobDefinition": arn,
        "ecsPropertiesOverride": {"taskProperties": [{"containers": [
            {"name": "configure", "environment": configure_env},
            {"name": "algorithm",
             "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
             "environment": [{"name": "C2D_MAX_SECONDS", "value": "1800"},
                             {"name": "DIDS", "value": '["did:op:a", "did:op:b"]'},
                             {"name": "TRANSFORMATION_DID", "value": "did:op:algo"}]},
            {"name": "publish", "environment": [{"name": "C2D_JOB_KEY", "value": KEY}, {"name": "JOB_ID", "value": job_id}]},
        ]}]},
        # the algorithm's 1800 s are enforced in its container; Batch's clock adds the stages' margin
        "timeout": {"attemptDurationSeconds": 1800 + 1800},
        "propagateTags": True,
        "tags": {"c2d:jobId": job_id, "c2d:environment": environment},
    }


def manifest(job_id):
    return f"s3://test-results/jobs/{job_id}/manifest.json"


def submitted(job_id="job-1"):
    return {"jobArn": f"arn:aws:batch:us-east-1:123456789012:job/b-{job_id}", "jobName": f"c2d-{job_id}",
            "jobId": f"b-{job_id}"}


def submit(d, job_id="job-1", container=PYTHON, environment="cpu", timeout=1800, **extra):
    return d.submit(job_id, ENVIRONMENTS[environment], manifest(job_id), container, timeout,
                    dids=["did:op:a", "did:op:b", "did:op:a"], algorithm_did="did:op:algo", runner_key=KEY, **extra)


def test_first_submit_registers_the_definition_then_submits(batch):
    client, stubber = batch
    d = dispatcher(client)
    name = d.definition_name(PYTHON)
    assert name.startswith("c2d-algo-") and len(name) <= 128
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                         {"jobDefinitionName": name, "status": "ACTIVE"})
    stubber.add_response("register_job_definition",
                         {"jobDefinitionName": name, "jobDefinitionArn": definition_arn(name), "revision": 1},
                         expected_definition(name))
    stubber.add_response("submit_job", submitted(), expected_submit(definition_arn(name)))
    assert submit(d) == "b-job-1"


def test_a_container_seen_before_reuses_its_definition(batch):
    client, stubber = batch
    d = dispatcher(client)
    name = d.definition_name(PYTHON)
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []})
    stubber.add_response("register_job_definition",
                         {"jobDefinitionName": name, "jobDefinitionArn": definition_arn(name), "revision": 1})
    stubber.add_response("submit_job", submitted("job-1"))
    stubber.add_response("submit_job", submitted("job-2"), expected_submit(definition_arn(name), "job-2"))
    submit(d, "job-1")
    # The same container from another DDO (equal values): no Describe, no Register.
    again = AlgorithmContainer(image="python", tag="3.11-slim", checksum=DIGEST.upper().replace("SHA256", "sha256"),
                               entrypoint="python $ALGO")
    assert submit(d, "job-2", again) == "b-job-2"


def test_a_new_container_finds_the_active_definition_batch_already_has(batch):
    """Another Lambda container registered it: reuse its newest ACTIVE revision, register nothing."""
    client, stubber = batch
    d = dispatcher(client)
    name = d.definition_name(PYTHON)
    revisions = [{"jobDefinitionName": name, "jobDefinitionArn": definition_arn(name, r), "revision": r,
                  "status": "ACTIVE", "type": "container"} for r in (1, 3, 2)]
    stubber.add_response("describe_job_definitions", {"jobDefinitions": revisions},
                         {"jobDefinitionName": name, "status": "ACTIVE"})
    stubber.add_response("submit_job", submitted(), expected_submit(definition_arn(name, 3)))
    submit(d)


def test_each_distinct_container_gets_its_own_definition(batch):
    client, _ = batch
    d = dispatcher(client)
    variants = [
        PYTHON,
        AlgorithmContainer(image="python", tag="3.11-slim", checksum="sha256:" + "cd" * 32, entrypoint="python $ALGO"),
        AlgorithmContainer(image="python", tag="3.11-slim", checksum=DIGEST, entrypoint="python3 $ALGO"),
        AlgorithmContainer(image="python", tag="3.12", entrypoint="python $ALGO"),
    ]
    assert len({d.definition_name(c) for c in variants}) == 4
    # A new runner image must not reuse definitions that still point at the old one.
    other = BatchDispatcher(client, runner_image=RUNNER + "1", results_bucket="test-results", job_role_arn=ROLE)
    assert other.definition_name(PYTHON) != d.definition_name(PYTHON)


def test_gpu_environment_overrides_and_timeout_cap(batch):
    client, stubber = batch
    d = dispatcher(client, execution_role_arn="arn:aws:iam::123456789012:role/exec")
    name = d.definition_name(PYTHON)
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []})
    stubber.add_response("register_job_definition",
                         {"jobDefinitionName": name, "jobDefinitionArn": definition_arn(name), "revision": 1},
                         {**expected_definition(name), "ecsProperties": ANY})
    expected = expected_submit(definition_arn(name), "job-g")
    expected["jobQueue"] = ENVIRONMENTS["gpu"].job_queue
    expected["tags"]["c2d:environment"] = "gpu"
    expected["timeout"] = {"attemptDurationSeconds": 60 + 1800}  # maxJobDuration 30 s, our floor is 60
    algorithm = expected["ecsPropertiesOverride"]["taskProperties"][0]["containers"][1]
    algorithm["resourceRequirements"] = [
        {"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "31232"}, {"type": "GPU", "value": "1"}]
    algorithm["environment"][0] = {"name": "C2D_MAX_SECONDS", "value": "60"}
    stubber.add_response("submit_job", submitted("job-g"), expected)
    submit(d, "job-g", environment="gpu", timeout=7200)
    task = d.definition_request(PYTHON)["ecsProperties"]["taskProperties"][0]
    assert task["executionRoleArn"] == "arn:aws:iam::123456789012:role/exec"


def test_attempt_timeout():
    cpu = ENVIRONMENTS["cpu"]
    assert batch_timeout_seconds(3600) == 3600 + 1800
    assert attempt_seconds(cpu, None) == 3600
    assert attempt_seconds(cpu, 0) == 3600
    assert attempt_seconds(cpu, 600) == 600
    assert attempt_seconds(cpu, 10) == 60
    assert attempt_seconds(cpu, 99999) == 3600


def test_terminate_marks_the_reason_as_a_stop(batch):
    client, stubber = batch
    stubber.add_response("terminate_job", {}, {"jobId": "b-1", "reason": "c2d-stop: Job stopped by owner"})
    dispatcher(client).terminate("b-1", "Job stopped by owner")
    assert is_stop_reason("c2d-stop: Job stopped by owner")
    assert not is_stop_reason("Essential container in task exited") and not is_stop_reason(None)


def test_batch_refusal_is_a_503_without_details(batch, caplog):
    client, stubber = batch
    d = dispatcher(client)
    d._definitions[d.definition_name(PYTHON)] = definition_arn("x")
    stubber.add_client_error("submit_job", "ClientException", "queue c2d-cpu is DISABLED", 400)
    with pytest.raises(ServiceUnavailable) as raised:
        submit(d)
    assert raised.value.status_code == 503
    assert "manifest" not in str(raised.value) and MANIFEST not in caplog.text
    assert "ClientException" in caplog.text
    stubber.add_client_error("terminate_job", "ServerException", http_status_code=500)
    with pytest.raises(ServiceUnavailable):
        d.terminate("b-1")


def test_unreachable_batch_is_a_503():
    client = boto3.session.Session().client(
        "batch", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"max_attempts": 1}))
    with pytest.raises(ServiceUnavailable):
        submit(dispatcher(client))


def test_manifest_content_never_reaches_batch(batch):
    """Only the manifest's S3 URI is in the request; there are no Batch parameters at all."""
    client, _ = batch
    d = dispatcher(client)
    request = d.submit_request("job-1", ENVIRONMENTS["cpu"], MANIFEST, "arn:def", dids=["did:op:a"], runner_key=KEY)
    text = json.dumps(request)
    assert "parameters" not in request and "parameters" not in d.definition_request(PYTHON)
    assert text.count("s3://") == 1
    with pytest.raises(ValueError):
        d.submit_request("job-1", ENVIRONMENTS["cpu"], "https://example.com/manifest.json", "arn:def", runner_key=KEY)
    with pytest.raises(ValueError):
        d.submit_request("../job", ENVIRONMENTS["cpu"], MANIFEST, "arn:def", runner_key=KEY)
    for not_a_key in ("", "short", KEY + "AA"):
        with pytest.raises(ValueError):
            d.submit_request("job-1", ENVIRONMENTS["cpu"], MANIFEST, "arn:def", runner_key=not_a_key)


@pytest.mark.parametrize("container, reference", [
    (PYTHON, "python@" + DIGEST),
    (AlgorithmContainer(image="python", tag="3.11", entrypoint="python $ALGO"), "python:3.11"),
    (AlgorithmContainer(image="node", entrypoint="node $ALGO"), "node:latest"),
    (AlgorithmContainer(image="registry.example.com:5000/team/algo:v2", tag="ignored", entrypoint="x"),
     "registry.example.com:5000/team/algo:v2"),
    (AlgorithmContainer(image="registry.example.com:5000/algo:v2", checksum=DIGEST, entrypoint="x"),
     "registry.example.com:5000/algo@" + DIGEST),
    (AlgorithmContainer(image="algo@" + DIGEST, entrypoint="x"), "algo@" + DIGEST),
])
def test_image_reference(container, reference):
    assert container.reference() == reference


@pytest.mark.parametrize("metadata", [
    None,
    {"image": "python", "tag": "3.11"},                                    # no entrypoint
    {"image": "", "entrypoint": "python $ALGO"},
    {"image": "python", "checksum": "md5:1234", "entrypoint": "python $ALGO"},
    {"image": "python", "checksum": "sha256:1234", "entrypoint": "python $ALGO"},
    {"image": "algo@" + DIGEST, "checksum": "sha256:" + "00" * 32, "entrypoint": "x"},  # disagree
    {"image": "python", "tag": "3.11; rm -rf /", "entrypoint": "python $ALGO"},
    {"image": "py thon", "entrypoint": "python $ALGO"},
    {"image": "pyt\nhon", "entrypoint": "python $ALGO"},
    {"image": "python", "entrypoint": ["python", "$ALGO"]},
    {"image": "x" * 300, "entrypoint": "python $ALGO"},
])
def test_malformed_containers_are_validation_errors(metadata):
    with pytest.raises(ValidationError) as raised:
        AlgorithmContainer.from_metadata(metadata)
    assert raised.value.status_code == 400


def test_from_metadata_normalises():
    container = AlgorithmContainer.from_metadata(
        {"image": " python ", "tag": "3.11", "checksum": DIGEST.upper().replace("SHA256", "sha256"),
         "entrypoint": "python $ALGO"})
    assert container.reference() == "python@" + DIGEST


def test_network_policy_is_part_of_the_definition(batch):
    """`user` cannot be overridden at submit: a job whose datasets all allow network access gets
    the definition of UID 4001, any other job the one of UID 4000, never the other's."""
    client, stubber = batch
    d = dispatcher(client)
    sealed, open_ = d.definition_name(PYTHON), d.definition_name(PYTHON, allow_network=True)
    assert sealed != open_
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                         {"jobDefinitionName": open_, "status": "ACTIVE"})
    stubber.add_response("register_job_definition",
                         {"jobDefinitionName": open_, "jobDefinitionArn": definition_arn(open_), "revision": 1},
                         expected_definition(open_, uid=4001))
    # ... on the environment's network queue, whose instances run no sealed job
    stubber.add_response("submit_job", submitted(), expected_submit(definition_arn(open_), queue="c2d-cpu-net"))
    submit(d, allow_network=True)
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                         {"jobDefinitionName": sealed, "status": "ACTIVE"})
    stubber.add_response("register_job_definition",
                         {"jobDefinitionName": sealed, "jobDefinitionArn": definition_arn(sealed), "revision": 1},
                         expected_definition(sealed, uid=4000))
    stubber.add_response("submit_job", submitted("job-2"), expected_submit(definition_arn(sealed), "job-2"))
    submit(d, "job-2")


def test_the_algorithm_holds_no_role_of_its_own_and_runs_as_a_fixed_user():
    """What reaches the algorithm container: a non-root user, only ALGO in its environment (no
    role, no key, no credential URI), logs to CloudWatch; the task role is the task's (ECS gives
    it to every container: the instance's network rules are what keep UID 4000/4001 from it)."""
    client = boto3.session.Session().client("batch", region_name="eu-west-3")
    d = BatchDispatcher(client, runner_image=RUNNER, results_bucket="test-results", job_role_arn=ROLE,
                        algorithm_log_group="/c2d/algorithms")
    task = d.definition_request(PYTHON)["ecsProperties"]["taskProperties"][0]
    configure, algorithm, publish = task["containers"]
    assert algorithm["user"] == "4000:4000" and "privileged" not in algorithm
    assert algorithm["environment"] == [{"name": "ALGO", "value": "/data/transformations/algorithm"}]
    assert algorithm["logConfiguration"] == {"logDriver": "awslogs", "options": {
        "awslogs-group": "/c2d/algorithms", "awslogs-stream-prefix": "c2d", "awslogs-region": "eu-west-3"}}
    assert "user" not in configure and "user" not in publish  # the runner is root in its own containers
    for runner in (configure, publish):
        env = {item["name"]: item["value"] for item in runner["environment"]}
        assert env["C2D_REGION"] == "eu-west-3" and env["ALGORITHM_UID"] == "4000"
    script = algorithm["command"][3]
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        assert name in script.split("unset ", 1)[1].split("\n", 1)[0]
    assert publish["dependsOn"] == [{"containerName": "algorithm", "condition": "COMPLETE"}]
    # after a failed configure the agent never pulls nor starts the algorithm's image (an
    # ENTRYPOINT that ignores our command would otherwise run on the provider's dime)
    assert algorithm["dependsOn"] == [{"containerName": "configure", "condition": "SUCCESS"}]


def test_without_a_network_queue_a_network_allowed_job_runs_sealed_and_is_told_so(batch):
    """An environment with no networkJobQueue would put a network-allowed job (4001) beside
    sealed ones, which an abstract Unix socket joins on a host-networked instance: the job runs
    sealed instead (UID 4000's definition, the normal queue), and configure's log says why."""
    client, stubber = batch
    d = dispatcher(client)
    sealed = d.definition_name(PYTHON)
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                         {"jobDefinitionName": sealed, "status": "ACTIVE"})
    stubber.add_response("register_job_definition",
                         {"jobDefinitionName": sealed, "jobDefinitionArn": definition_arn(sealed), "revision": 1},
                         expected_definition(sealed, uid=4000))
    stubber.add_response("submit_job", submitted(), expected_submit(
        definition_arn(sealed), queue="c2d-sealed", environment="sealed", notice=NETWORK_NOT_GRANTED))
    submit(d, environment="sealed", allow_network=True)
    # a sealed job on that environment: same definition, no notice
    stubber.add_response("submit_job", submitted("job-2"), expected_submit(
        definition_arn(sealed), "job-2", queue="c2d-sealed", environment="sealed"))
    submit(d, "job-2", environment="sealed")
    assert "not granted on this environment" in NETWORK_NOT_GRANTED


def test_sealed_and_network_jobs_never_share_a_queue():
    """A networkJobQueue that is any environment's jobQueue is a configuration error."""
    base = {"chainIds": [8996], "nCPU": 1, "ramGB": 1, "diskGB": 1, "maxJobs": 1, "maxJobDuration": 60}
    for environments in (
        [dict(base, id="a", jobQueue="q", networkJobQueue="q")],
        [dict(base, id="a", jobQueue="q"), dict(base, id="b", jobQueue="r", networkJobQueue="q")],
        [dict(base, id="a", jobQueue="arn:aws:batch:us-east-1:123456789012:job-queue/q", networkJobQueue="q")],
    ):
        with pytest.raises(ConfigurationError, match="never share"):
            parse_environments(environments)
    with pytest.raises(ConfigurationError):
        parse_environments([dict(base, id="a", jobQueue="q", networkJobQueue=7)])
    two = parse_environments([dict(base, id="a", jobQueue="q", networkJobQueue="n"),
                              dict(base, id="b", jobQueue="r", networkJobQueue="n")])
    assert job_queues(two.values()) == {"q", "r", "n"} and two["a"].offers_network
    assert not parse_environments([dict(base, id="c", jobQueue="q", networkJobQueue="")])["c"].offers_network


def test_the_job_key_reaches_configure_and_publish_only():
    """Issue 18, point 2: the job's key (sealed manifest, signed events) is a per-container
    environment override of the runner's two containers (SubmitJob's TaskContainerOverrides has
    `environment`, and no `secrets`); the definition, shared by every job of the container,
    holds no key, and the algorithm container, whose image is hostile, gets none."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("batch")
    assert set(model.shape_for("TaskContainerOverrides").members) == {"command", "environment", "name",
                                                                      "resourceRequirements"}
    client = boto3.session.Session().client("batch", region_name="us-east-1")
    d = dispatcher(client)
    request = d.submit_request("job-1", ENVIRONMENTS["cpu"], MANIFEST, "arn:def", runner_key=KEY)
    containers = {c["name"]: {e["name"]: e["value"] for e in c["environment"]}
                  for c in request["ecsPropertiesOverride"]["taskProperties"][0]["containers"]}
    assert containers["configure"]["C2D_JOB_KEY"] == containers["publish"]["C2D_JOB_KEY"] == KEY
    assert KEY not in json.dumps(containers["algorithm"]) and "C2D_JOB_KEY" not in containers["algorithm"]
    assert KEY not in json.dumps(d.definition_request(PYTHON)) and "C2D_JOB_KEY" not in json.dumps(d.definition_request(PYTHON))
