"""Accessors for the container's long-lived services, each built once on first use.

Routes call these instead of building clients, so a warm Lambda reuses everything and a cold one
builds only what the route it serves needs (the chain stack is never built for `/` or the nonce).
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from chalicelib import config, models
from chalicelib.auth.authenticator import Authenticator, bearer_token, header
from chalicelib.auth.nonces import NonceStore, is_nonce
from chalicelib.auth.signatures import address_of_key, is_address, is_signature, to_checksum_address
from chalicelib.errors import ConfigurationError, InvalidSignature, Unauthorized, ValidationError
from chalicelib.observability import context as observability

if TYPE_CHECKING:
    from chalicelib.assets.creators import NftCreators
    from chalicelib.assets.resolver import AssetResolver
    from chalicelib.auth.tokens import TokenService
    from chalicelib.chain.web3access import Chains
    from chalicelib.compute.access import AccessLists
    from chalicelib.compute.start_rate import StartRates
    from chalicelib.compute.dispatch import Dispatcher
    from chalicelib.compute.image_digests import ImageDigests
    from chalicelib.compute.events import JobEvents
    from chalicelib.compute.job_starts import ResumeGate
    from chalicelib.compute.jobs import JobService
    from chalicelib.compute.registry_auth import JobRegistrySecrets
    from chalicelib.compute.usage import UsageCounter
    from chalicelib.compute.workflow import ComputeWorkflow
    from chalicelib.http import Call
    from chalicelib.models import JobRecord
    from chalicelib.node.logs import AlgorithmLogs
    from chalicelib.payments.service import EscrowPayments
    from chalicelib.schemas import SignedParams, SignedParts


@lru_cache(maxsize=1)
def settings() -> config.Settings:
    loaded = config.settings()
    models.bind(loaded)
    return loaded


@lru_cache(maxsize=1)
def provider_address() -> str:
    return address_of_key(settings().provider_private_key())


@lru_cache(maxsize=1)
def nonce_store() -> NonceStore:
    settings()
    return NonceStore()


@lru_cache(maxsize=1)
def token_service() -> "TokenService":
    """Auth tokens (PyJWT imported here: a signed request without a token never needs it)."""
    from chalicelib.auth.tokens import TokenService

    current = settings()
    return TokenService(current.jwt_secret(), current.token_max_lifetime)


@lru_cache(maxsize=1)
def authenticator() -> Authenticator:
    return Authenticator(nonce_store(), token_service)


@lru_cache(maxsize=1)
def chains() -> "Chains":
    """Web3 per configured chain; web3 itself is imported when a chain is first used."""
    from chalicelib.chain.web3access import Chains

    return Chains.from_settings(settings())


@lru_cache(maxsize=1)
def asset_resolver() -> "AssetResolver":
    """did -> checked DDO (registered NFTs on chain, cached; else METADATA_URL)."""
    from chalicelib.assets.resolver import build_resolver

    return build_resolver(settings(), chains())


@lru_cache(maxsize=1)
def nft_creators() -> "NftCreators":
    """Who created a data NFT, per the chain's ERC721Factory (NFT_FACTORIES); cached for good."""
    from chalicelib.assets.creators import NftCreators

    return NftCreators(chains(), settings().nft_factories)


@lru_cache(maxsize=1)
def access_lists() -> "AccessLists":
    """Who an environment's `access` admits, its AccessList contracts read on chain."""
    from chalicelib.compute.access import AccessLists

    return AccessLists(chains(), settings().chain_ids)


@lru_cache(maxsize=1)
def image_digests() -> "ImageDigests":
    """Pins each start's algorithm image to its manifest digest (compute.image_digests): through
    its registry on AWS Batch; the local backend pulls no image, so the DDO's checksum stands.
    The operator's registry logins are read from the secret store by the first start that asks."""
    from chalicelib.compute.image_digests import DeclaredDigests, RegistryDigests, parse_logins

    current = settings()
    if current.compute_backend == "local":
        return DeclaredDigests()
    logins: dict[str, Any] = {}

    def read_logins() -> Mapping[str, Any]:
        """REGISTRY_CREDENTIALS, then the secrets ECS pulls with (REGISTRY_SECRETS) for the
        registries it does not name: one login per registry, whichever way it is configured."""
        if "value" not in logins:
            try:
                found = parse_logins(current.registry_credentials())
            except ValueError as problem:
                raise ConfigurationError(f"REGISTRY_CREDENTIALS {problem}") from None
            for host in current.registry_secrets:
                if host not in found:
                    try:
                        found.update(parse_logins(json.dumps({host: json.loads(current.registry_secret(host))})))
                    except ValueError:
                        raise ConfigurationError(f"REGISTRY_SECRETS: the secret of {host!r} must be "
                                                 '{"username": "...", "password": "..."}') from None
            logins["value"] = found
        return logins["value"]

    return RegistryDigests(read_logins, allow_private=current.allow_private_networks)


@lru_cache(maxsize=1)
def start_rates() -> "StartRates":
    from chalicelib.compute.start_rate import StartRates

    settings()
    return StartRates()


@lru_cache(maxsize=1)
def job_events() -> "JobEvents":
    """Applies Batch and runner events to job records; the write that ends a job gives its
    environment's slot back (currentJobs) in the same transaction."""
    from chalicelib.compute.events import build_job_events

    return build_job_events(settings().bucket, on_terminal=job_ended)


@lru_cache(maxsize=1)
def usage_counter() -> "UsageCounter":
    from chalicelib.compute.usage import UsageCounter

    settings()
    return UsageCounter()


# COMPUTE_BACKEND=local: the process that runs the local backend (devstack's API server, under
# `make run`) registers its factory here at startup. chalicelib never imports that backend, so
# nothing of it is shipped to Lambda and no import circle runs through it.
LocalBackend = Callable[[config.Settings], "Dispatcher"]
_local_backend: Optional[LocalBackend] = None


def register_local_dispatcher(factory: Optional[LocalBackend]) -> None:
    """Use `factory(settings)` as the dispatcher when COMPUTE_BACKEND=local (None unregisters)."""
    global _local_backend
    _local_backend = factory
    dispatcher.cache_clear()


@lru_cache(maxsize=1)
def dispatcher() -> "Dispatcher":
    """AWS Batch, or (COMPUTE_BACKEND=local) the backend the running process registered."""
    current = settings()
    if current.compute_backend == "local":
        if _local_backend is None:
            raise ConfigurationError("COMPUTE_BACKEND=local needs a local dispatcher registered by the process "
                                     "serving the API (run it with `make run`), and none is")
        return _local_backend(current)
    from chalicelib import aws
    from chalicelib.compute.dispatch import BatchDispatcher

    return BatchDispatcher(aws.client("batch"), current.runner_image, current.bucket,
                           job_role_arn=current.batch_job_role_arn,
                           execution_role_arn=current.batch_execution_role_arn, event_bus=current.event_bus,
                           region=current.region, algorithm_log_group=current.algorithm_log_group,
                           registry_secrets=current.registry_secrets)


@lru_cache(maxsize=1)
def registry_secrets() -> "JobRegistrySecrets | None":
    """Where a start keeps a consumer's registry login while its job exists (Secrets Manager, on
    Batch); None on the local backend, which pulls no image (such starts are refused)."""
    current = settings()
    if current.compute_backend == "local":
        return None
    from chalicelib import aws
    from chalicelib.compute.registry_auth import JobRegistrySecrets

    return JobRegistrySecrets(lambda: aws.client("secretsmanager"), current.registry_secret_prefix)


@lru_cache(maxsize=1)
def job_service() -> "JobService":
    from chalicelib import aws
    from chalicelib.compute.jobs import JobService
    from chalicelib.results import JobObjects

    current = settings()
    # S3 and Batch clients are built on first use (aws.client caches them): a stop of a
    # finished job or a status listing needs neither.
    from chalicelib.owner.audit import AuditLog
    from chalicelib.owner.release import ReleasePolicy

    return JobService(JobObjects(lambda: aws.client("s3"), current.bucket), lambda: dispatcher(), usage_counter(),
                      record_retention=current.job_record_retention, on_terminal=job_ended,
                      resume_gate=stored_escrow_lock, audit=AuditLog(),
                      releases=ReleasePolicy(frozenset(current.release_required)),
                      registry_secrets=registry_secrets())


@lru_cache(maxsize=1)
def compute_workflow() -> "ComputeWorkflow":
    """Everything a compute start or initialize needs; builds the chain stack lazily."""
    from chalicelib.chain.fees import ProviderFees
    from chalicelib.chain.orders import OrderVerifier
    from chalicelib.compute import checksums
    from chalicelib.compute.environments import environments
    from chalicelib.compute.validation import ComputeValidator
    from chalicelib.compute.workflow import ComputeWorkflow

    current = settings()
    address = provider_address()
    return ComputeWorkflow(
        resolver=asset_resolver(),
        validator=ComputeValidator(address, environments(), files_checksum=checksums.from_settings(current),
                                   s3_sources=current.s3_file_sources, registries=current.algorithm_registries,
                                   image_digests=image_digests()),
        verifier=OrderVerifier(chains().web3, address),
        fees=ProviderFees(current.provider_private_key(), address, decimals=chains().token_decimals),
        jobs=job_service(),
        current_nonce=lambda who: nonce_store().current(checksum(who)),
    )


@lru_cache(maxsize=1)
def payments() -> "EscrowPayments":
    """Ocean Node's escrow payments (chalicelib.payments): quotes, locks, claims, and the
    provider's own transactions; web3 is imported when a chain is first used."""
    from chalicelib.payments.setup import build_payments

    return build_payments(settings(), chains())


def escrow_enabled() -> bool:
    """Whether any chain takes escrow payments (ESCROW_CONTRACTS): routes and event handlers of
    free or v4 jobs then never build the payments stack."""
    from chalicelib.payments.setup import escrow_addresses

    return bool(escrow_addresses())


def job_ended(job: "JobRecord") -> None:
    """The hook of every write that ends a job: its registry login secret deleted (if it had
    one), then its escrow settled."""
    from chalicelib.compute.job_dispatch import DispatchSpec

    spec = DispatchSpec.of_record(job)
    secrets = registry_secrets() if spec is not None and spec.registry_secret else None
    if secrets is not None and spec is not None:
        secrets.delete(spec.registry_secret)
    settle_escrow(job)


def settle_escrow(job: "JobRecord") -> None:
    """The hook of every write that ends a job: claim what it ran from its escrow lock, or
    cancel the lock (payments.settlement). Without escrow configured nothing is built."""
    if not escrow_enabled():
        return
    from chalicelib.payments.settlement import settle_job

    job.refresh(consistent_read=True)  # a transaction's write leaves the in-memory record stale
    settle_job(payments(), job)


def stored_escrow_lock(job: "JobRecord") -> "ResumeGate | None":
    """The escrow lock of a recorded start, for the same start again or the reconciler (None
    without escrow configured, or for a job without escrow payment)."""
    if not escrow_enabled():
        return None
    from chalicelib.payments.paid_start import stored_lock

    return stored_lock(payments(), job)


@lru_cache(maxsize=1)
def provider_public_key() -> str:
    """The provider's compressed secp256k1 public key, 0x-hex (Ocean Node's `nodePublicKey`)."""
    from coincurve import PrivateKey

    key = PrivateKey(bytes.fromhex(settings().provider_private_key().removeprefix("0x")))
    return "0x" + key.public_key.format(compressed=True).hex()


@lru_cache(maxsize=1)
def provider_peer_id() -> str:
    """The provider's libp2p peer id (`16Uiu2HA…`), as Ocean Node derives its own from its key."""
    from chalicelib.node.identity import peer_id

    return peer_id(settings().provider_private_key())


@lru_cache(maxsize=1)
def algorithm_logs() -> "AlgorithmLogs":
    """A job's algorithm log so far (Ocean Node's computeStreamableLogs): the local dispatcher's,
    else CloudWatch's (its client built on the first read there), else the published log."""
    from chalicelib import aws
    from chalicelib.node.logs import AlgorithmLogs

    current = settings()
    return AlgorithmLogs(dispatcher(), batch=lambda: aws.client("batch"), logs=lambda: aws.client("logs"),
                         s3=lambda: aws.client("s3"), bucket=current.bucket, log_group=current.algorithm_log_group,
                         cloudwatch=current.compute_backend != "local")


def reset() -> None:
    """Forget every built service (tests switch settings and AWS backends between cases)."""
    from chalicelib import aws

    for accessor in (settings, provider_address, nonce_store, token_service, authenticator, chains, asset_resolver,
                     job_events, usage_counter, dispatcher, job_service, compute_workflow):
        accessor.cache_clear()
    for accessor in (provider_public_key, provider_peer_id, algorithm_logs, payments, nft_creators, access_lists,
                     start_rates, image_digests):
        accessor.cache_clear()
    config.settings.cache_clear()
    aws.reset()
    import sys

    console_auth = sys.modules.get("chalicelib.admin.auth")  # built from these settings, if ever used
    if console_auth is not None:
        console_auth.reset()


def checksum(address: str) -> str:
    return to_checksum_address(address)


def authenticate_request(model: type["SignedParams"], raw: Mapping[str, Any], headers: Mapping[str, str], *,
                         early: bool) -> str | None:
    """The checksummed caller of a signed route, its nonce consumed (chalicelib.http calls this
    for every signed operation, before the route does anything).

    `early`: called on the request as sent, before its model validates it. The nonce is then
    spent at once if the signed parts are complete and well formed (a signer, a nonce where the
    route requires one, and a proof), so that no later check of any other field can refuse the
    request with its signature still unspent: a signature is good once, on one route. Otherwise
    (None) the model reports what is missing or malformed, and the call after validation
    (`early=False`) refuses what is left, e.g. no proof at all.

    Proof, in order: a signature; an `AuthToken` header (v4: the nonce is still required); an
    `Authorization: <jwt>` header (Ocean Node's: no nonce needed, refusals are 401). A route
    whose proof is optional (`proof_optional`, v4 status) gets None without one."""
    parts = model.signed_parts(raw)
    sessions = model.session_authenticator() if model.allow_token else None
    auth_token = header(headers, "AuthToken") if model.allow_token and sessions is None else None
    authorization = bearer_token(header(headers, "Authorization")) if model.allow_token else None
    has_signature = parts is not None and parts.signature not in (None, "")
    if model.proof_optional and not (has_signature or auth_token or authorization):
        return None
    if early and not _complete(model, parts, bool(auth_token or authorization)):
        return None
    if parts is None:  # validated by now: the model refuses what is not text
        raise ValidationError.field("signature", "the signed fields must be text")
    if not has_signature and sessions is not None and authorization:
        caller = _session_caller(sessions, parts, authorization)
    elif not has_signature and not auth_token and authorization:
        caller = authenticator().authenticate_bearer(parts.signer, authorization, parts.nonce)
    else:
        caller = authenticator().authenticate(
            address=parts.signer,
            nonce=parts.nonce,
            signature=parts.signature,
            message_prefix=parts.before,
            auth_token=auth_token,
            allow_token=model.allow_token,
            message_suffix=parts.after,
            other_suffixes=parts.other_after,
            nonceless_message=parts.nonceless,
        )
    observability.annotate(consumer=caller)  # the request's line names who it was, proven
    return caller


def _session_caller(sessions: Authenticator, parts: "SignedParts", session: str) -> str:
    """The caller a route's own session proves (SignedParams.session_authenticator), its nonce
    spent as with a v4 auth token; 401 for a session that is bad, expired or signed out."""
    try:
        return sessions.authenticate(address=parts.signer, nonce=parts.nonce, signature=None, message_prefix=parts.before,
                                     auth_token=session, allow_token=True, message_suffix=parts.after)
    except InvalidSignature as refusal:
        if "nonce" in refusal.errors:
            raise
        raise Unauthorized("The session is invalid, expired or signed out: sign in again") from None


def _complete(model: type["SignedParams"], parts: Optional["SignedParts"], token: bool) -> bool:
    """Whether a request as sent names a well-formed signer, a nonce where the route requires one,
    and a proof (a well-formed signature, or a token where the route takes one)."""
    if parts is None or not is_address(parts.signer):
        return False
    if parts.signature not in (None, ""):
        proven = is_signature(parts.signature)
    else:
        proven = token
    nonce_given = is_nonce(parts.nonce) or (parts.nonce is None and not model.model_fields["nonce"].is_required())
    return proven and nonce_given


def presented_token(call: "Call") -> str | None:
    """The auth token a call presents, in either header (v4 `AuthToken`, Ocean Node `Authorization`)."""
    return call.header("AuthToken") or bearer_token(call.header("Authorization"))
