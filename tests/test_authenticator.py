"""The AuthToken path of the shared check (§3.3) and atomic nonce consumption (§3.2)."""
from __future__ import annotations

import threading
import time

import jwt
import pytest

from chalicelib.auth.authenticator import Authenticator
from chalicelib.auth.nonces import NonceStore
from chalicelib.auth.tokens import TokenService
from chalicelib.errors import InvalidSignature, ValidationError
from signing import CONSUMER_KEY, OTHER_KEY, address, sign

CONSUMER = address(CONSUMER_KEY)
SECRET = "a-test-jwt-secret-of-sufficient-length-42"
PREFIX = CONSUMER + "job-1" + "did:op:1"


@pytest.fixture
def tokens(aws):
    return TokenService(SECRET, max_lifetime=3600)


@pytest.fixture
def auth(tokens):
    return Authenticator(NonceStore(), lambda: tokens)


def token_for(tokens, who=CONSUMER, ttl=600):
    return tokens.create(who, int(time.time()) + ttl)


def call(auth, nonce, signature=None, token=None, who=CONSUMER):
    return auth.authenticate(who, nonce, signature, PREFIX, auth_token=token)


def test_valid_token_replaces_signature_and_consumes_nonce(auth, tokens):
    assert call(auth, 1, token=token_for(tokens)) == CONSUMER
    assert NonceStore().current(CONSUMER) == 1
    with pytest.raises(InvalidSignature, match="nonce"):
        call(auth, 1, token=token_for(tokens))


def test_token_with_stale_nonce_is_a_400_not_a_503(auth, tokens):
    call(auth, 5, token=token_for(tokens))
    with pytest.raises(InvalidSignature) as raised:
        call(auth, 4, token=token_for(tokens))
    assert raised.value.status_code == 400


def test_expired_token(auth):
    clock = [time.time() - 1000]
    old = TokenService(SECRET, 3600, clock=lambda: clock[0])
    expired = old.create(CONSUMER, int(clock[0]) + 10)
    with pytest.raises(InvalidSignature, match="expired"):
        call(auth, 1, token=expired)


def test_revoked_token(auth, tokens):
    token = token_for(tokens)
    tokens.revoke(tokens.revocable_claims(token, CONSUMER))
    with pytest.raises(InvalidSignature, match="deleted"):
        call(auth, 1, token=token)


def test_token_of_another_address(auth, tokens):
    with pytest.raises(InvalidSignature, match="belong"):
        call(auth, 1, token=token_for(tokens, who=address(OTHER_KEY)))


def test_alg_none_token_is_refused(auth):
    claims = {"address": CONSUMER, "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "n" * 32}
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(InvalidSignature, match="invalid"):
        call(auth, 1, token=unsigned)


@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
def test_token_signed_with_another_secret_or_algorithm(auth, algorithm):
    claims = {"address": CONSUMER, "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "n" * 32}
    secret = "another-secret-of-sufficient-length-xyz" if algorithm == "HS256" else SECRET
    with pytest.raises(InvalidSignature, match="invalid"):
        call(auth, 1, token=jwt.encode(claims, secret, algorithm=algorithm))


def test_token_missing_claims_is_refused(auth):
    with pytest.raises(InvalidSignature, match="invalid"):
        call(auth, 1, token=jwt.encode({"address": CONSUMER, "exp": int(time.time()) + 60}, SECRET))


def test_signature_takes_precedence_over_a_valid_token(auth, tokens):
    bad_signature = sign(OTHER_KEY, PREFIX + "1")
    with pytest.raises(InvalidSignature, match="signature"):
        call(auth, 1, signature=bad_signature, token=token_for(tokens))
    assert call(auth, 1, signature=sign(CONSUMER_KEY, PREFIX + "1"), token="garbage") == CONSUMER


def test_neither_signature_nor_token(auth):
    with pytest.raises(ValidationError, match="signature is required"):
        call(auth, 1)
    assert NonceStore().current(CONSUMER) == 0


@pytest.fixture
def atomic_moto_updates(monkeypatch):
    """DynamoDB applies each UpdateItem atomically; in-process moto does not (2 of 50 threads were
    seen to pass the same condition), so give moto that one guarantee. A read-then-write
    implementation would still let several threads through; only a conditional write passes."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    original = DynamoDBBackend.update_item

    def update_item(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", update_item)


def test_concurrent_same_nonce_exactly_one_succeeds(aws, atomic_moto_updates):
    """50 threads consume the same nonce at once: exactly one may succeed."""
    store = NonceStore()
    outcomes: list[str] = []
    barrier = threading.Barrier(50)

    def attempt():
        barrier.wait()
        try:
            store.consume(CONSUMER, 42)
            outcomes.append("ok")
        except InvalidSignature:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 1 and outcomes.count("refused") == 49


def test_conditional_path_deterministically(aws):
    store = NonceStore()
    store.consume(CONSUMER, 10)
    for stale in (10, 9, 0):
        with pytest.raises(InvalidSignature):
            store.consume(CONSUMER, stale)
    store.consume(CONSUMER, 11)
    store.consume(CONSUMER, 10**37)
    assert store.current(CONSUMER) == 10**37


def test_a_message_split_elsewhere_is_refused_whatever_its_nonce(auth):
    """v4 result signs consumer + jobId + index + nonce: `...job-1` + `0` + `1000` is also the
    status of job `...job-1` with nonce `01000`, or of `...job-` with nonce `101000` (greater).
    The first use records the message, so no other split of it passes (issue 20 #2)."""
    message = CONSUMER + "job-1" + "0" + "1000"
    signature = sign(CONSUMER_KEY, message)
    assert auth.authenticate(CONSUMER, "1000", signature, CONSUMER + "job-10") == CONSUMER
    for prefix, nonce in ((CONSUMER + "job-1", "01000"), (CONSUMER + "job-", "101000")):
        with pytest.raises(InvalidSignature) as refused:
            auth.authenticate(CONSUMER, nonce, signature, prefix)
        assert "nonce" in refused.value.errors
    assert NonceStore().current(CONSUMER) == 1000


def test_splitting_a_message_the_other_way_only_lowers_its_nonce(auth):
    """Digits moved out of the nonce into the text before it make the nonce smaller: the stored
    nonce refuses that, no record needed (a one-digit nonce after a letter is neither recorded
    nor checked)."""
    signature = sign(CONSUMER_KEY, CONSUMER + "job-a" + "57")
    auth.authenticate(CONSUMER, "57", signature, CONSUMER + "job-a")
    with pytest.raises(InvalidSignature, match="not above"):
        auth.authenticate(CONSUMER, "7", signature, CONSUMER + "job-a5")


def test_message_use_is_what_the_split_needs():
    from chalicelib.auth.authenticator import message_use

    assert message_use("m", CONSUMER, "1700000000", CONSUMER).record is False, "may be a recorded message split later"
    assert message_use("m", CONSUMER + "job-1", "5", CONSUMER).record is True, "its nonce could be read as 15"
    assert message_use("m", CONSUMER + "job-a", "5", CONSUMER) is None
    assert message_use("m", CONSUMER, "5", CONSUMER) is None, "an address never gives its digits away"


def test_a_stale_nonce_with_a_checked_message_is_a_stale_nonce(auth):
    auth.authenticate(CONSUMER, "50", sign(CONSUMER_KEY, CONSUMER + "50"), CONSUMER)
    with pytest.raises(InvalidSignature, match="not above"):
        auth.authenticate(CONSUMER, "40", sign(CONSUMER_KEY, CONSUMER + "40"), CONSUMER)
    with pytest.raises(InvalidSignature, match="not above"):
        auth.authenticate(CONSUMER, "4", sign(CONSUMER_KEY, CONSUMER + "j1" + "4"), CONSUMER + "j1")
