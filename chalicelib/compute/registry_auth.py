"""A consumer's login to a private registry for one job (Ocean Node's `encryptedDockerRegistryAuth`),
kept in Secrets Manager only while the job exists.

The field is ECIES-encrypted to the provider's key (as every encrypted field of Ocean's), its
plaintext JSON `{"username": ..., "password": ...}` or `{"auth": base64("username:password")}`
(Docker's config.json form), as Ocean Node's `validateDockerRegistryAuth` reads it. What happens
to it:

- A start decrypts it (a malformed or undecryptable value: 400 naming the field, never its
  content), pins the image's digest with it (compute.image_digests: the same registry the job
  pulls from), and stores it as a secret of its own, `<RESOURCE_PREFIX>/job-registry/<jobId>`,
  tagged with the job id, before the job is recorded: ECS reads a private image's login only from
  Secrets Manager (`repositoryCredentials.credentialsParameter`, a secret holding
  `{"username", "password"}`), and a start finished later by the reconciler needs it too.
- The job's Batch definition names that secret for the algorithm container (compute.dispatch);
  the jobs' execution role may read secrets under that prefix only (infra/resources.yaml).
- The write that ends the job deletes the secret at once (no recovery window); a start that was
  refused or undone deletes it too. The reconciler deletes every secret under the prefix whose job
  is gone or ended (a Lambda that died between creating it and recording the job, a lost delete).

Nothing here logs, returns in an error or keeps in a record the login itself; the record keeps
the secret's ARN only. ALGORITHM_REGISTRIES still decides which registries may be used at all.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any, Callable, Iterator, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.assets import ecies
from chalicelib.compute.image_digests import RegistryLogin
from chalicelib.errors import ServiceUnavailable, ValidationError

log = logging.getLogger(__name__)

FIELD = "encryptedDockerRegistryAuth"
JOB_ID_TAG = "c2d:job-id"
SECRET_DIRECTORY = "job-registry/"
MAX_LOGIN_CHARS = 4096  # a username and a token: registries' tokens are far shorter
ORPHAN_AFTER = 15 * 60  # s: a secret without its job record, older than any start lives

UNAVAILABLE = "The secret store is unavailable, try again later"
MALFORMED = ('must be ECIES-encrypted (to the provider key, 0x-hex) JSON: {"username": "...", "password": "..."} '
             'or {"auth": "<base64 of username:password>"}')


def parse_login(plain: bytes) -> RegistryLogin:
    """The login of a decrypted `encryptedDockerRegistryAuth`; ValueError (saying what shape is
    expected, never the value) when it is neither form."""
    try:
        data = json.loads(plain)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(MALFORMED) from None
    if not isinstance(data, dict):
        raise ValueError(MALFORMED)
    username, password = data.get("username"), data.get("password")
    if isinstance(data.get("auth"), str) and username is None and password is None:
        try:
            username, sep, password = base64.b64decode(data["auth"], validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ValueError(MALFORMED) from None
        if not sep:
            raise ValueError(MALFORMED)
    if not (isinstance(username, str) and isinstance(password, str) and username and password
            and len(username) + len(password) <= MAX_LOGIN_CHARS
            and not any(ord(c) < 32 for c in username + password) and ":" not in username):
        raise ValueError(MALFORMED)
    return RegistryLogin(username, password)


def decrypt_login(private_key: str, ciphertext: str) -> RegistryLogin:
    """The consumer's login from the start's field; 400 naming the field when it cannot be read."""
    try:
        return parse_login(ecies.decrypt(private_key, ciphertext.strip()))
    except (ecies.DecryptionError, ValueError):
        raise ValidationError.field(FIELD, MALFORMED) from None


class JobRegistrySecrets:
    """The per-job secrets under one prefix, through a Secrets Manager client (built on first use)."""

    def __init__(self, client: Callable[[], Any], prefix: str, *, clock: Callable[[], float] = time.time,
                 orphan_after: int = ORPHAN_AFTER) -> None:
        if not prefix.endswith("/"):
            raise ValueError("the per-job secrets' prefix must end with /")
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._orphan_after = orphan_after

    @property
    def prefix(self) -> str:
        return self._prefix

    def name(self, job_id: str) -> str:
        return self._prefix + job_id

    def create(self, job_id: str, login: RegistryLogin) -> str:
        """The job's secret (made again if a retry of the same start finds it): its ARN."""
        name = self.name(job_id)
        try:
            try:
                made = self._client().create_secret(
                    Name=name, SecretString=login.secret_string(), Tags=[{"Key": JOB_ID_TAG, "Value": job_id}],
                    Description="A consumer's registry login for one compute job; deleted when the job ends")
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ResourceExistsException":
                    raise
                made = self._client().put_secret_value(SecretId=name, SecretString=login.secret_string())
            return str(made["ARN"])
        except (ClientError, BotoCoreError) as error:
            log.warning("job %s: registry login secret not created (%s)", job_id, _code(error))
            raise ServiceUnavailable(UNAVAILABLE) from None

    def delete(self, secret: str) -> bool:
        """Delete a job's secret (by ARN or name) at once; True when it is gone (or was already).
        Never raises: the reconciler deletes what is left."""
        try:
            self._client().delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return True
            log.warning("registry login secret not deleted (%s)", _code(error))
            return False
        except BotoCoreError as error:
            log.warning("registry login secret not deleted (%s)", _code(error))
            return False
        return True

    def sweep(self, job_ended: Callable[[str], Optional[bool]]) -> tuple[int, int]:
        """Delete every secret under the prefix whose job ended (`job_ended(job_id)` True) or has
        no record (None) once older than `orphan_after`: (deleted, errors)."""
        deleted = errors = 0
        now = self._clock()
        for entry in self._listed():
            name = str(entry.get("Name", ""))
            job_id = name[len(self._prefix):]
            if not name.startswith(self._prefix) or not job_id:
                continue
            try:
                ended = job_ended(job_id)
            except Exception as error:  # one job's trouble is counted, the sweep goes on
                log.warning("job %s: registry secret sweep failed (%s)", job_id, _code(error))
                errors += 1
                continue
            created = entry.get("CreatedDate")
            age = now - created.timestamp() if hasattr(created, "timestamp") else float("inf")
            if ended or (ended is None and age >= self._orphan_after):
                if self.delete(str(entry.get("ARN") or name)):
                    deleted += 1
                else:
                    errors += 1
        return deleted, errors

    def _listed(self) -> Iterator[dict[str, Any]]:
        pages = self._client().get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [self._prefix]}])
        for page in pages:
            yield from page.get("SecretList", [])


def _code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__
