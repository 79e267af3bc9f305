"""Settings: every missing or malformed value fails with a message naming it."""
from __future__ import annotations

import pytest

from chalicelib.config import SecretSource, load_settings
from chalicelib.errors import ConfigurationError

BASE = {
    "CHAINS": '{"8996": "http://127.0.0.1:8545"}',
    "RESULTS_BUCKET": "bucket",
    "PROVIDER_PRIVATE_KEY": "0x" + "11" * 32,
    "JWT_SECRET": "s" * 40,
}


def test_valid_settings():
    settings = load_settings(BASE)
    assert settings.chains == {8996: "http://127.0.0.1:8545"}
    assert settings.chain_ids == [8996]
    assert settings.provider_private_key() == "0x" + "11" * 32
    assert settings.jwt_secret() == "s" * 40
    assert settings.token_max_lifetime == 86400


@pytest.mark.parametrize(
    "change, named",
    [
        ({"CHAINS": ""}, "CHAINS"),
        ({"CHAINS": "[1,2]"}, "CHAINS"),
        ({"CHAINS": '{"x": "http://a"}'}, "CHAINS"),
        ({"CHAINS": '{"1": "ftp://a"}'}, "CHAINS"),
        ({"RESULTS_BUCKET": ""}, "RESULTS_BUCKET"),
        ({"TOKEN_MAX_LIFETIME": "soon"}, "TOKEN_MAX_LIFETIME"),
        ({"TOKEN_MAX_LIFETIME": "-5"}, "TOKEN_MAX_LIFETIME"),
        ({"RPC_TIMEOUT": "x"}, "RPC_TIMEOUT"),
    ],
)
def test_malformed_settings_name_the_variable(change, named):
    with pytest.raises(ConfigurationError, match=named):
        load_settings({**BASE, **change})


@pytest.mark.parametrize(
    "change, named",
    [
        ({"PROVIDER_PRIVATE_KEY": ""}, "PROVIDER_PRIVATE_KEY"),
        ({"PROVIDER_PRIVATE_KEY": "0x1234"}, "PROVIDER_PRIVATE_KEY"),
    ],
)
def test_bad_provider_key_fails_on_use_without_echoing_it(change, named):
    settings = load_settings({**BASE, **change})
    with pytest.raises(ConfigurationError, match=named) as raised:
        settings.provider_private_key()
    assert "0x1234" not in str(raised.value)


@pytest.mark.parametrize(
    "change",
    [{"JWT_SECRET": ""}, {"JWT_SECRET": "short"}, {"JWT_SECRET": "11" * 32}],
    ids=["missing", "short", "same-as-provider-key"],
)
def test_bad_jwt_secret(change):
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        load_settings({**BASE, **change}).jwt_secret()


def test_secrets_come_from_the_secret_store_once():
    calls = []

    def fetch(name):
        calls.append(name)
        return {"prov": "0x" + "22" * 32, "ssm:/jwt": "j" * 40}[name]

    source = SecretSource({"PROVIDER_KEY_SECRET": "prov", "JWT_SECRET_NAME": "ssm:/jwt"}, fetch)
    assert source.provider_key() == "0x" + "22" * 32
    assert source.jwt_secret() == "j" * 40
    source.provider_key()
    assert calls == ["prov", "ssm:/jwt"]


def test_secrets_manager_and_ssm_are_read_from_aws(aws):
    from chalicelib import aws as aws_clients
    from chalicelib.config import _fetch_aws_secret

    aws_clients.client("secretsmanager").create_secret(Name="provider-key", SecretString="0x" + "33" * 32)
    aws_clients.client("ssm").put_parameter(Name="/c2d/jwt", Value="k" * 40, Type="SecureString")
    assert _fetch_aws_secret("provider-key") == "0x" + "33" * 32
    assert _fetch_aws_secret("ssm:/c2d/jwt") == "k" * 40
