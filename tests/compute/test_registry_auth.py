"""Private registries (issue: Ocean Node's job options, "Private registries"): the consumer's
`encryptedDockerRegistryAuth` read from its ECIES ciphertext, the per-job secret's life in
Secrets Manager (moto), and the job definitions' `repositoryCredentials` (botocore's Stubber
against Batch's own service model), for the job's own secret and the operator's REGISTRY_SECRETS."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber

from chalicelib.assets import ecies
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.dispatch import BatchDispatcher
from chalicelib.compute.image_digests import RegistryLogin
from chalicelib.compute.registry_auth import FIELD, JOB_ID_TAG, JobRegistrySecrets, decrypt_login, parse_login
from chalicelib.config import ConfigurationError, load_settings, registry_secret_arns
from chalicelib.errors import ValidationError

KEY = "0x" + "42" * 32
PREFIX = "ocean-c2d-test/job-registry/"
DIGEST = "sha256:" + "cd" * 32
PRIVATE = AlgorithmContainer(image="registry.example.com/team/algo", tag="1", checksum=DIGEST, entrypoint="python $ALGO")
HUB = AlgorithmContainer(image="python", tag="3.11", checksum=DIGEST, entrypoint="python $ALGO")
JOB_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ocean-c2d-test/job-registry/job-1-AbCdEf"
OPERATOR_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ocean-c2d-test/registries/example-XyZ123"


def encrypted(value) -> str:
    text = value if isinstance(value, (bytes, str)) else json.dumps(value)
    return ecies.encrypt_for_key(KEY, text.encode() if isinstance(text, str) else text)


# -- the field ------------------------------------------------------------------------------

def test_both_of_ocean_nodes_forms_are_read():
    assert decrypt_login(KEY, encrypted({"username": "alice", "password": "pa:ss"})) == RegistryLogin("alice", "pa:ss")
    auth = base64.b64encode(b"bob:t0ken:with:colons").decode()
    assert decrypt_login(KEY, encrypted({"auth": auth})) == RegistryLogin("bob", "t0ken:with:colons")


@pytest.mark.parametrize("plain", [
    b"not json", b"[]", {"username": "alice"}, {"password": "x"}, {"username": "", "password": "x"},
    {"username": "a:b", "password": "x"}, {"username": "alice", "password": 7}, {"auth": "!!!"},
    {"auth": base64.b64encode(b"no-colon").decode()}, {"username": "alice", "password": "x\ny"},
    {"username": "alice", "password": "x" * 5000},
])
def test_a_malformed_login_is_refused_naming_the_field_never_its_value(plain):
    with pytest.raises(ValidationError) as refused:
        decrypt_login(KEY, encrypted(plain))
    assert list(refused.value.errors) == [FIELD]
    assert "alice" not in str(refused.value.body()) and "no-colon" not in str(refused.value.body())


@pytest.mark.parametrize("ciphertext", ["0xzz", "0x" + "00" * 80, ecies.encrypt_for_key("0x" + "43" * 32, b"{}")])
def test_what_the_provider_key_cannot_decrypt_is_refused_naming_the_field(ciphertext):
    with pytest.raises(ValidationError) as refused:
        decrypt_login(KEY, ciphertext)
    assert list(refused.value.errors) == [FIELD]


def test_a_login_never_shows_its_password():
    login = parse_login(b'{"username": "alice", "password": "hunter2"}')
    assert "hunter2" not in repr(login) and "hunter2" not in str(login)
    assert json.loads(login.secret_string()) == {"username": "alice", "password": "hunter2"}


# -- the per-job secret (moto) ----------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secretsmanager(aws):
    """The session's moto (as every test's), emptied of secrets afterwards."""
    from chalicelib import aws as clients

    client = clients.client("secretsmanager")
    yield client
    for secret in client.list_secrets()["SecretList"]:
        client.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)


def test_a_jobs_secret_is_made_named_and_tagged_for_it_then_deleted_at_once(secretsmanager):
    secrets = JobRegistrySecrets(lambda: secretsmanager, PREFIX)
    arn = secrets.create("job-1", RegistryLogin("alice", "hunter2"))
    described = secretsmanager.describe_secret(SecretId=arn)
    assert described["Name"] == PREFIX + "job-1" and {"Key": JOB_ID_TAG, "Value": "job-1"} in described["Tags"]
    assert json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"]) == {
        "username": "alice", "password": "hunter2"}
    assert secrets.create("job-1", RegistryLogin("alice", "hunter3")) == arn, "a retry of the same start: the same secret"
    assert secrets.delete(arn) and secrets.delete(arn), "deleted, and deleting again is no error"
    assert [s for s in secretsmanager.list_secrets()["SecretList"] if s["Name"].startswith(PREFIX)] == [], \
        "no recovery window: gone at once"


def test_the_sweep_deletes_ended_and_orphaned_secrets_and_keeps_live_and_young_ones(secretsmanager):
    clock = Clock()
    secrets = JobRegistrySecrets(lambda: secretsmanager, PREFIX, clock=clock, orphan_after=900)
    for job_id in ("live", "ended", "orphan", "young-orphan"):
        secrets.create(job_id, RegistryLogin("alice", "pw"))
    secretsmanager.create_secret(Name="someone-else/job-registry/ended", SecretString="{}")  # not ours
    state = {"live": False, "ended": True, "orphan": None, "young-orphan": None}
    assert secrets.sweep(state.get) == (0 + 1, 0), "at first only the ended job's: an orphan may be a start under way"
    clock.now += 901
    assert secrets.sweep(state.get) == (2, 0)
    left = sorted(entry["Name"] for entry in secretsmanager.list_secrets()["SecretList"])  # this test's only
    assert left == [PREFIX + "live", "someone-else/job-registry/ended"]


def test_a_sweep_counts_a_jobs_trouble_and_goes_on(secretsmanager):
    secrets = JobRegistrySecrets(lambda: secretsmanager, PREFIX)
    secrets.create("a", RegistryLogin("alice", "pw"))
    secrets.create("b", RegistryLogin("alice", "pw"))

    def ended(job_id: str):
        if job_id == "a":
            raise RuntimeError("store down")
        return True

    assert secrets.sweep(ended) == (1, 1)


# -- the job definitions (Stubber) -------------------------------------------------------------

@pytest.fixture
def batch():
    client = boto3.session.Session().client("batch", region_name="us-east-1",
                                             aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber


def test_a_jobs_own_secret_pulls_its_image_and_makes_a_definition_of_its_own(batch):
    client, stubber = batch
    dispatcher = BatchDispatcher(client, "runner:1", "results", registry_secrets={"registry.example.com": OPERATOR_SECRET})
    request = dispatcher.definition_request(PRIVATE, registry_secret=JOB_SECRET)
    assert request["ecsProperties"]["taskProperties"][0]["containers"][1]["repositoryCredentials"] == {
        "credentialsParameter": JOB_SECRET}
    names = {dispatcher.definition_name(PRIVATE), dispatcher.definition_name(PRIVATE, registry_secret=JOB_SECRET),
             dispatcher.definition_name(PRIVATE, registry_secret=JOB_SECRET.replace("job-1", "job-2"))}
    assert len(names) == 3, "one definition per job secret, apart from the container's own"
    for _ in range(2):  # never kept in memory: another job's definition is never this one
        stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                             {"jobDefinitionName": request["jobDefinitionName"], "status": "ACTIVE"})
        stubber.add_response("register_job_definition", {"jobDefinitionName": request["jobDefinitionName"],
                                                         "revision": 1, "jobDefinitionArn": "arn:aws:batch:us-east-1:1:job-definition/x:1"},
                             request)
        dispatcher.job_definition(PRIVATE, registry_secret=JOB_SECRET)
    stubber.assert_no_pending_responses()


def test_the_operators_secret_pulls_its_registrys_images_only(batch):
    client, stubber = batch
    dispatcher = BatchDispatcher(client, "runner:1", "results", registry_secrets={"registry.example.com": OPERATOR_SECRET})
    private = dispatcher.definition_request(PRIVATE)
    assert private["ecsProperties"]["taskProperties"][0]["containers"][1]["repositoryCredentials"] == {
        "credentialsParameter": OPERATOR_SECRET}
    public = dispatcher.definition_request(HUB)
    assert "repositoryCredentials" not in public["ecsProperties"]["taskProperties"][0]["containers"][1]
    assert BatchDispatcher(client, "runner:1", "results").definition_name(HUB) == dispatcher.definition_name(HUB), \
        "a definition without credentials keeps its name"
    stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                         {"jobDefinitionName": private["jobDefinitionName"], "status": "ACTIVE"})
    stubber.add_response("register_job_definition", {"jobDefinitionName": private["jobDefinitionName"], "revision": 1,
                                                     "jobDefinitionArn": "arn:aws:batch:us-east-1:1:job-definition/p:1"},
                         private)
    assert dispatcher.job_definition(PRIVATE) == dispatcher.job_definition(PRIVATE), "kept in memory as any other"
    stubber.assert_no_pending_responses()


# -- the operator's setting ---------------------------------------------------------------------

def test_registry_secrets_name_a_secret_per_registry_host():
    assert registry_secret_arns(json.dumps({"Registry.Example.com": OPERATOR_SECRET, "index.docker.io": OPERATOR_SECRET})) == {
        "registry.example.com": OPERATOR_SECRET, "docker.io": OPERATOR_SECRET}
    for wrong in ("[]", "{", json.dumps({"ghcr.io": "ocean-c2d/ghcr"}), json.dumps({"ghcr.io": {"username": "a"}})):
        with pytest.raises(ConfigurationError, match="REGISTRY_SECRETS"):
            registry_secret_arns(wrong)
    settings = load_settings({"RESULTS_BUCKET": "b", "CHAINS": '{"8996": "http://127.0.0.1:8545"}',
                              "RESOURCE_PREFIX": "ocean-c2d-prod"})
    assert settings.registry_secret_prefix == "ocean-c2d-prod/job-registry/" and settings.registry_secrets == {}


def test_the_image_digests_pin_with_the_operators_registry_secrets_too(secretsmanager, monkeypatch):
    """One setting serves both: the secret ECS pulls with is the login the start pins with
    (REGISTRY_CREDENTIALS, when it names the same registry, wins for the pin)."""
    from chalicelib import services

    made = secretsmanager.create_secret(
        Name="test/registries/example", SecretString=json.dumps({"username": "operator", "password": "s3cret"}))
    monkeypatch.setenv("REGISTRY_SECRETS", json.dumps({"registry.example.com": made["ARN"], "ghcr.io": made["ARN"]}))
    monkeypatch.setenv("REGISTRY_CREDENTIALS", json.dumps({"ghcr.io": {"username": "pinner", "password": "pw"}}))
    services.reset()
    try:
        logins = services.image_digests()._logins()  # type: ignore[attr-defined]
        assert logins == {"registry.example.com": RegistryLogin("operator", "s3cret"),
                          "ghcr.io": RegistryLogin("pinner", "pw")}
        assert services.dispatcher().credentials(PRIVATE) == made["ARN"]  # type: ignore[attr-defined]
    finally:
        monkeypatch.undo()
        services.reset()
