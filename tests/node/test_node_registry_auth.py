"""A consumer's private registry at /node (issue: Ocean Node's job options, "Private registries"):
`encryptedDockerRegistryAuth` pins the image with the consumer's login, becomes a Secrets Manager
secret (moto) that the job's definition pulls with (Batch through botocore's Stubber), exists only
while the job does (deleted at its terminal write, or swept by the reconciler after a crash), and
is refused by name when it cannot be read; ALGORITHM_REGISTRIES still decides which registries
may be used. Real contracts on anvil, the consumer's ECIES to the provider's key."""
from __future__ import annotations

import dataclasses
import json

import pytest

from lifecycle_helpers import TEST_IMAGE
from oci_registry import LoopbackRegistry
from test_node_protocol import (  # noqa: F401 - `node` is a fixture
    JOB_QUEUE_ARN, deliver, finish, free_body, get, node, post,
)

LOGIN = {"username": "alice", "password": "hunter2-registry"}
PRIVATE_IMAGE = {"meta": {"rawcode": "print('hello')", "container": {
    "entrypoint": "python $ALGO", "image": "ghcr.io/team/private-algo", "tag": "1.0", "checksum": TEST_IMAGE.digest}}}


@pytest.fixture(autouse=True)
def no_secrets_left(aws):
    """moto keeps secrets across tests (conftest empties tables and buckets): each test starts
    and ends with none of a job's."""
    def empty() -> None:
        for secret in job_secrets():
            secrets_manager().delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)

    empty()
    yield
    empty()


@pytest.fixture
def private_registry(node, monkeypatch):
    """GHCR's API at a registry of the tests' whose token realm serves alice only."""
    from chalicelib import services
    from chalicelib.compute.image_digests import RegistryDigests

    registry = LoopbackRegistry(logins={LOGIN["username"]: LOGIN["password"]}).start()
    registry.publish("team/private-algo", "1.0", TEST_IMAGE)
    digests = RegistryDigests(endpoints={"ghcr.io": registry.url}, allow_private=True)
    monkeypatch.setattr(services, "image_digests", lambda: digests)
    yield registry
    registry.stop()


def encrypted_login(chain, login) -> str:
    from chalicelib.assets import ecies

    return ecies.encrypt(chain.provider_public_key, (login if isinstance(login, bytes) else json.dumps(login).encode()))


def secrets_manager():
    from chalicelib import aws

    return aws.client("secretsmanager")


def job_secrets() -> list[dict]:
    from chalicelib import services

    prefix = services.settings().registry_secret_prefix
    return [s for s in secrets_manager().list_secrets()["SecretList"] if s["Name"].startswith(prefix)]


def start_private(client, node, login=LOGIN, account=None) -> dict:
    chain, batch, published = node
    batch.expect_new_definition()
    batch.expect_submit("batch-free")
    status, body = post(client, "/freeCompute", free_body(published, account or chain.consumer, PRIVATE_IMAGE,
                                                          encryptedDockerRegistryAuth=encrypted_login(chain, login)))
    assert status == 200, body
    return body[0]


def test_the_login_pins_the_image_and_lives_as_a_secret_only_while_its_job_does(client, node, private_registry):
    from chalicelib import services
    from chalicelib.models import JobRecord

    chain, batch, _ = node
    job = start_private(client, node)
    assert private_registry.token_logins == ["alice"], "the digest was pinned with the consumer's login"

    (secret,) = job_secrets()
    assert secret["Name"] == services.settings().registry_secret_prefix + job["jobId"]
    assert {"Key": "c2d:job-id", "Value": job["jobId"]} in secret["Tags"]
    assert json.loads(secrets_manager().get_secret_value(SecretId=secret["ARN"])["SecretString"]) == LOGIN
    (definition,) = batch.registered
    algorithm = definition["ecsProperties"]["taskProperties"][0]["containers"][1]
    assert algorithm["repositoryCredentials"] == {"credentialsParameter": secret["ARN"]}
    assert algorithm["image"] == f"ghcr.io/team/private-algo@{TEST_IMAGE.digest}"
    assert LOGIN["password"] not in json.dumps(batch.submitted) + json.dumps(definition)
    record = JobRecord.get(job["jobId"])
    assert record.dispatch_spec["registrySecret"] == secret["ARN"]
    assert LOGIN["password"] not in json.dumps(record.attribute_values, default=str), "the record keeps the ARN only"
    answered = json.loads(get(client, "/compute", consumerAddress=chain.consumer.address, jobId=job["jobId"]).body)
    assert LOGIN["password"] not in json.dumps(answered) + json.dumps(job) and "registrySecret" not in json.dumps(answered)

    finish(client, job["jobId"])
    assert JobRecord.get(job["jobId"]).status == 70
    assert job_secrets() == [], "the terminal write deleted it"


def test_a_start_without_the_login_or_with_a_wrong_one_is_refused_and_keeps_no_secret(client, node, private_registry):
    chain, _, published = node
    for extra in ({}, {"encryptedDockerRegistryAuth": encrypted_login(chain, {**LOGIN, "password": "wrong"})}):
        status, body = post(client, "/freeCompute", free_body(published, chain.consumer, PRIVATE_IMAGE, **extra))
        assert status == 400 and body["error"] == {"algorithm.container": "image_not_found"}, body
        assert "wrong" not in json.dumps(body)
    assert job_secrets() == []


def test_the_login_takes_ocean_nodes_auth_form_too(client, node, private_registry):
    import base64

    auth = base64.b64encode(f"{LOGIN['username']}:{LOGIN['password']}".encode()).decode()
    job = start_private(client, node, login={"auth": auth})
    (secret,) = job_secrets()
    assert json.loads(secrets_manager().get_secret_value(SecretId=secret["ARN"])["SecretString"]) == LOGIN
    finish(client, job["jobId"])
    assert job_secrets() == []


@pytest.mark.parametrize("value,why", [
    ("0x1234", "undecryptable"),
    (b"not json", "malformed"),
    ({"username": "alice"}, "no password"),
    (12, "not a string"),
])
def test_an_unreadable_login_is_refused_naming_the_field(client, node, value, why):
    chain, _, published = node
    sent = value if isinstance(value, (str, int)) else encrypted_login(chain, value)
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, PRIVATE_IMAGE,
                                                          encryptedDockerRegistryAuth=sent))
    assert status == 400 and list(body["errors"]) == ["encryptedDockerRegistryAuth"], (why, body)
    assert "alice" not in json.dumps(body)
    assert job_secrets() == []


def test_a_backend_that_pulls_no_image_refuses_the_login_by_name(client, node, monkeypatch):
    """The local backend (`make run`) pulls no image: no secret store is built for it."""
    from chalicelib import services

    chain, _, published = node
    with monkeypatch.context() as local:
        local.setattr(services, "registry_secrets", lambda: None)
        status, body = post(client, "/freeCompute", free_body(published, chain.consumer, PRIVATE_IMAGE,
                                                              encryptedDockerRegistryAuth=encrypted_login(chain, LOGIN)))
    assert status == 400 and "not supported" in body["errors"]["encryptedDockerRegistryAuth"][0], body
    local_settings = dataclasses.replace(services.settings(), compute_backend="local")
    monkeypatch.setattr(services, "settings", lambda: local_settings)
    assert services.registry_secrets.__wrapped__() is None, "the local backend builds no secret store"


def test_a_registry_the_operator_does_not_allow_stays_refused_with_a_login(client, node):
    chain, _, published = node
    elsewhere = {"meta": {**PRIVATE_IMAGE["meta"], "container": {
        **PRIVATE_IMAGE["meta"]["container"], "image": "registry.example.com/team/private-algo"}}}
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, elsewhere,
                                                          encryptedDockerRegistryAuth=encrypted_login(chain, LOGIN)))
    assert status == 400 and body["error"] == {"algorithm.container": "image_registry_not_allowed"}, body
    assert job_secrets() == []


def test_the_reconciler_deletes_what_a_crash_or_a_lost_delete_left(client, node, private_registry, monkeypatch):
    from chalicelib import services
    from chalicelib.compute.image_digests import RegistryLogin
    from chalicelib.compute.reconcile import build_reconciler
    from chalicelib.compute.registry_auth import JobRegistrySecrets
    from chalicelib.models import JobRecord

    chain, _, _ = node
    tried: list[str] = []
    with monkeypatch.context() as lost:  # the terminal write's delete is lost (Secrets Manager did not answer)
        lost.setattr(JobRegistrySecrets, "delete", lambda self, secret: tried.append(secret) or False)
        ended = start_private(client, node)
        finish(client, ended["jobId"])
    assert JobRecord.get(ended["jobId"]).status == 70 and len(tried) == 1
    live = start_private(client, node, account=chain.other)
    services.registry_secrets().create("lost-start", RegistryLogin("alice", "pw"))  # died before its record
    assert len(job_secrets()) == 3

    # a secret without a record is an orphan once older than any start lives (0 s here)
    sweeping = JobRegistrySecrets(secrets_manager, services.settings().registry_secret_prefix, orphan_after=0)
    monkeypatch.setattr(services, "registry_secrets", lambda: sweeping)
    assert build_reconciler().run().as_dict()["secretsDeleted"] == 2
    assert [s["Name"].rsplit("/", 1)[-1] for s in job_secrets()] == [live["jobId"]], "the live job keeps its login"


def test_a_start_killed_before_submit_is_dispatched_later_with_its_secret(client, node, private_registry, monkeypatch):
    """The Lambda died after the job was recorded and before SubmitJob: the secret stays (the
    job holds it), and the reconciler dispatches the job from its record pulling with it."""
    import time

    from chalicelib import services
    from chalicelib.compute.batch_naming import job_name
    from chalicelib.compute.environments import environments
    from chalicelib.compute.reconcile import Reconciler
    from chalicelib.models import JobRecord

    class Killed(BaseException):
        """No `except Exception` (so no undo) sees it."""

    chain, batch, published = node

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as dying:
        dying.setattr(services.dispatcher(), "submit", die)
        with pytest.raises(Killed):
            post(client, "/freeCompute", free_body(published, chain.consumer, PRIVATE_IMAGE,
                                                   encryptedDockerRegistryAuth=encrypted_login(chain, LOGIN)))
    (job,) = JobRecord.scan()
    (secret,) = job_secrets()
    assert int(job.status) == 1 and not job.batch_job_id and job.dispatch_spec["registrySecret"] == secret["ARN"]

    batch.stubber.add_response("list_jobs", {"jobSummaryList": []}, {
        "jobQueue": "ocean-c2d-cpu", "filters": [{"name": "JOB_NAME", "values": [job_name(job.job_id)]}]})
    batch.expect_new_definition()
    batch.expect_submit("batch-healed")
    report = Reconciler(services.job_events(), batch.client, services.job_service().finish_stored,
                        [(e.id, e.job_queue) for e in environments().values()], clock=lambda: time.time() + 400,
                        registry_secrets=services.registry_secrets()).run()
    assert report.dispatched == [job.job_id] and report.secrets_deleted == 0, report.as_dict()
    algorithm = batch.registered[-1]["ecsProperties"]["taskProperties"][0]["containers"][1]
    assert algorithm["repositoryCredentials"] == {"credentialsParameter": secret["ARN"]}
    finish(client, job.job_id, batch_job_id="batch-healed")
    assert job_secrets() == []
