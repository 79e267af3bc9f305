"""PynamoDB models of the provider's tables.

Table names come from settings, so `bind()` sets them (and drops cached connections) before
first use; Lambda does it once per container, tests once per moto session.
"""
from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.attributes import TTLAttribute

from chalicelib import budget
from chalicelib.config import Settings


class TableMeta:
    """Connection settings every table shares, sized to the request budget (chalicelib.budget):
    PynamoDB's own defaults (15 s connect, 30 s read, 3 retries) let one hung DynamoDB call hold
    a request for two minutes."""

    connect_timeout_seconds = budget.DYNAMODB_CONNECT_SECONDS
    read_timeout_seconds = budget.DYNAMODB_READ_SECONDS
    max_retry_attempts = budget.DYNAMODB_RETRIES


class NonceRecord(Model):
    """The last nonce consumed by an address (checksummed); only ever increases."""

    class Meta(TableMeta):
        table_name = "nonces"
        billing_mode = "PAY_PER_REQUEST"

    address = UnicodeAttribute(hash_key=True)
    nonce = NumberAttribute()


class UsedMessage(Model):
    """A signed message whose nonce could be read elsewhere in it, kept in the nonces table under
    "signed:<keccak of the message>" (auth.nonces): v4 messages put text that may end in digits
    (a jobId, a did, a result index) right before the nonce, so `...job-7` + `1000` is also
    `...job-` + `71000`, a greater nonce. Never expires: such a replay's nonce stays greater."""

    class Meta(TableMeta):
        table_name = "nonces"
        billing_mode = "PAY_PER_REQUEST"

    key = UnicodeAttribute(hash_key=True, attr_name="address")
    signer = UnicodeAttribute()
    nonce = NumberAttribute()  # the nonce it was used with


class RevokedToken(Model):
    """A deleted auth token, kept until it would have expired anyway (TTL)."""

    class Meta(TableMeta):
        table_name = "revoked-tokens"
        billing_mode = "PAY_PER_REQUEST"

    jti = UnicodeAttribute(hash_key=True)
    address = UnicodeAttribute()
    expires_at = TTLAttribute(attr_name="expiresAt")


class JobsByOwner(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-owner"
        projection = AllProjection()

    owner = UnicodeAttribute(hash_key=True)
    date_created = NumberAttribute(range_key=True, attr_name="dateCreated")


class JobsByDocument(GlobalSecondaryIndex):
    """Every owner's jobs of a dataset. Nothing queries it since by-owner-document exists; it
    stays one release because CloudFormation adds or drops one index per table update."""

    class Meta:
        index_name = "by-document"
        projection = AllProjection()

    document_id = UnicodeAttribute(hash_key=True, attr_name="documentId")
    date_created = NumberAttribute(range_key=True, attr_name="dateCreated")


class ActiveJobs(GlobalSecondaryIndex):
    """Sparse: only jobs that have not ended carry `activeEnvironment` (set at creation, removed
    by the write that ends the job), so the reconciler finds the quiet ones without a scan."""

    class Meta:
        index_name = "active-by-update"
        projection = AllProjection()

    active_environment = UnicodeAttribute(hash_key=True, attr_name="activeEnvironment")
    updated_at = NumberAttribute(range_key=True, attr_name="updatedAt")


class JobsByOwnerDocument(GlobalSecondaryIndex):
    """One owner's jobs on one dataset, newest last: a documentId filter reads only those
    (the by-document index would read every owner's jobs of a popular dataset)."""

    class Meta:
        index_name = "by-owner-document"
        projection = AllProjection()

    owner_document = UnicodeAttribute(hash_key=True, attr_name="ownerDocument")
    date_created = NumberAttribute(range_key=True, attr_name="dateCreated")


class JobsByEnvironment(GlobalSecondaryIndex):
    """Every job of an environment, newest first: the operator's listing (chalicelib.admin), paged
    and bounded, whatever the job's status or owner; never a scan of the table."""

    class Meta:
        index_name = "by-environment"
        projection = AllProjection()

    environment = UnicodeAttribute(hash_key=True)
    date_created = NumberAttribute(range_key=True, attr_name="dateCreated")


def owner_document(owner: str, document_id: str) -> str:
    """The by-owner-document key: owners are 0x addresses, so the first space ends them."""
    return f"{owner} {document_id}"


class JobRecord(Model):
    """A compute job; `status` only moves forward (see compute.status)."""

    class Meta(TableMeta):
        table_name = "jobs"
        billing_mode = "PAY_PER_REQUEST"

    job_id = UnicodeAttribute(hash_key=True, attr_name="jobId")
    owner = UnicodeAttribute()
    document_id = UnicodeAttribute(attr_name="documentId")
    date_created = NumberAttribute(attr_name="dateCreated")
    date_finished = NumberAttribute(null=True, attr_name="dateFinished")
    status = NumberAttribute()
    status_text = UnicodeAttribute(attr_name="statusText")
    environment = UnicodeAttribute()
    chain_id = NumberAttribute(attr_name="chainId")
    agreement_id = UnicodeAttribute(attr_name="agreementId", default="")
    input_dids = ListAttribute(of=UnicodeAttribute, attr_name="inputDIDs", default=list)
    algo_did = UnicodeAttribute(attr_name="algoDID", default="")
    orders = ListAttribute(of=UnicodeAttribute, default=list)
    # Counters (EnvironmentUsage keys) the job holds besides its environment's, e.g. a free
    # tier's: taken in the start transaction, given back by the write that ends the job.
    usage_keys = ListAttribute(of=UnicodeAttribute, null=True, attr_name="usageKeys")
    batch_job_id = UnicodeAttribute(null=True, attr_name="batchJobId")
    results = JSONAttribute(null=True)
    termination_details = MapAttribute(null=True, attr_name="terminationDetails")
    stage_failure = NumberAttribute(null=True, attr_name="stageFailure")
    # Written by compute.events: the runner's last reported stage, the last Batch state seen,
    # where the full results list lives (results.json) and whether `results` was cut to fit
    # an event, and when an event last changed the record.
    stage = NumberAttribute(null=True)
    batch_attempt = NumberAttribute(null=True, attr_name="batchAttempt")  # highest Batch attempt seen (1-based)
    batch_status = UnicodeAttribute(null=True, attr_name="batchStatus")
    results_key = UnicodeAttribute(null=True, attr_name="resultsKey")
    results_truncated = BooleanAttribute(null=True, attr_name="resultsTruncated")
    updated_at = NumberAttribute(null=True, attr_name="updatedAt")
    # When the job first reached 40 (Batch RUNNING: its containers started); escrow bills from it.
    running_at = NumberAttribute(null=True, attr_name="runningAt")
    # When DynamoDB drops the record: its environment's storageExpiry plus the operator's
    # JOB_RECORD_RETENTION after the latest it can end (compute.jobs sets it at creation).
    expires_at = TTLAttribute(null=True, attr_name="expiresAt")
    # The environment while the job has not ended (the key of `active`), absent afterwards.
    active_environment = UnicodeAttribute(null=True, attr_name="activeEnvironment")
    owner_document = UnicodeAttribute(null=True, attr_name="ownerDocument")
    # The job's own secret (chalicelib.job_key): seals its manifest, signs its runner's events.
    # Never shown: status objects name their fields (compute.job_status).
    runner_key = UnicodeAttribute(null=True, attr_name="runnerKey")
    # The algorithm's time limit in seconds (C2D_MAX_SECONDS), set at the start.
    max_seconds = NumberAttribute(null=True, attr_name="maxSeconds")
    # Times of the current Batch attempt (epoch seconds; compute.deadlines, payments.settlement):
    # when Batch first said STARTING, when configure's signed 30 said the algorithm may start,
    # when publish's signed 60 said it started (the algorithm container had exited), and the
    # algorithm container's own StartedAt/FinishedAt as the ECS agent recorded them (publish
    # reads them from the task metadata endpoint).
    starting_at = NumberAttribute(null=True, attr_name="startingAt")
    algorithm_started_at = NumberAttribute(null=True, attr_name="algorithmStartedAt")
    publish_started_at = NumberAttribute(null=True, attr_name="publishStartedAt")
    algorithm_run = JSONAttribute(null=True, attr_name="algorithmRun")
    # The algorithm container's CloudWatch stream (c2d/algorithm/<ECS task id>) once Batch named the task.
    log_stream = UnicodeAttribute(null=True, attr_name="logStream")
    # What a start stores so that anyone can finish it (compute.job_dispatch): the Batch submit's
    # parameters, the fingerprint of the request that made it (a retry of the same start may
    # rewrite its manifest), and until when a dispatcher holds the right to submit it.
    dispatch_spec = JSONAttribute(null=True, attr_name="dispatchSpec")
    start_key = UnicodeAttribute(null=True, attr_name="startKey")
    dispatch_lease = NumberAttribute(null=True, attr_name="dispatchLease")
    # What the start knew, for the job's receipt and its publishers' audit (compute.provenance).
    provenance = JSONAttribute(null=True)
    # Ocean Node's start options (compute.job_options): the consumer's labels, answered in
    # status, and the addresses (lower case) besides the owner's that may read the job, its
    # results, logs and receipt, but not change it.
    metadata = JSONAttribute(null=True)
    viewers = ListAttribute(of=UnicodeAttribute, null=True, attr_name="additionalViewers")
    # Results held for the data owners' release (chalicelib.owner.release): which datasets'
    # publishers must agree, what each decided, the outcome.
    release = JSONAttribute(null=True)

    by_owner = JobsByOwner()
    by_document = JobsByDocument()
    by_owner_document = JobsByOwnerDocument()
    active = ActiveJobs()
    by_environment = JobsByEnvironment()


class AuditEntry(Model):
    """One job's use of one dataset, in the audit log its publisher reads (chalicelib.owner.audit):
    a partition per (the dataset's data NFT owner when the job started, dataset), its jobs sorted
    by `position` (creation time, then job id), so a page is one Query whatever the number of jobs.
    What changes (status, times, outputs, the receipt) is read from the job record."""

    class Meta(TableMeta):
        table_name = "audit"
        billing_mode = "PAY_PER_REQUEST"

    publisher_document = UnicodeAttribute(hash_key=True, attr_name="publisherDocument")
    position = UnicodeAttribute(range_key=True)
    job_id = UnicodeAttribute(attr_name="jobId")
    document_id = UnicodeAttribute(attr_name="documentId")
    consumer = UnicodeAttribute()
    date_created = NumberAttribute(attr_name="dateCreated")
    expires_at = TTLAttribute(null=True, attr_name="expiresAt")


def publisher_document(publisher: str, document_id: str) -> str:
    """The audit partition of a publisher's dataset: the address (lower case) ends at the space."""
    return f"{publisher.lower()} {document_id}"


def audit_position(date_created: int, job_id: str) -> str:
    """Newest last in the partition: zero-padded creation time, then the job id."""
    return f"{int(date_created):012d} {job_id}"


class OrderUse(Model):
    """Which job an order (chainId:txHash) started; a conditional put makes it single-use."""

    class Meta(TableMeta):
        table_name = "orders"
        billing_mode = "PAY_PER_REQUEST"

    order_id = UnicodeAttribute(hash_key=True, attr_name="orderId")
    job_id = UnicodeAttribute(attr_name="jobId")
    created_at = NumberAttribute(attr_name="createdAt")


class AssetRecord(Model):
    """A DDO read from its NFT on chain (an operator registered the NFT), cached by did.

    `block_number` is the block of the metadata event the DDO came from, `scanned_block` the
    last block searched for newer ones, `state` the NFT's metadata state at `updated_at`.
    """

    class Meta(TableMeta):
        table_name = "assets"
        billing_mode = "PAY_PER_REQUEST"

    did = UnicodeAttribute(hash_key=True)
    chain_id = NumberAttribute(attr_name="chainId")
    nft_address = UnicodeAttribute(attr_name="nftAddress")
    ddo = JSONAttribute()
    metadata_hash = UnicodeAttribute(attr_name="metadataHash", default="")
    block_number = NumberAttribute(attr_name="blockNumber", default=0)
    scanned_block = NumberAttribute(attr_name="scannedBlock", default=0)
    state = NumberAttribute(default=0)
    owner = UnicodeAttribute(null=True)
    updated_at = NumberAttribute(attr_name="updatedAt")
    # an indexer's view beside the DDO (chalicelib.assets.indexed): datatokens, indexedMetadata
    indexed = JSONAttribute(null=True)


class NftCreator(Model):
    """Who created a data NFT (assets.creators), kept in the assets table under
    "creator:<chainId>:<nft>": it never changes. "" for an NFT the factory did not create."""

    class Meta(TableMeta):
        table_name = "assets"
        billing_mode = "PAY_PER_REQUEST"

    key = UnicodeAttribute(hash_key=True, attr_name="did")
    creator = UnicodeAttribute(default="")


class EnvironmentUsage(Model):
    """Counters changed only by conditional updates. Jobs currently counted against an
    environment's maxJobs (or a free tier's), changed when a job starts (or its start is undone)
    and when it first reaches a terminal state; these never expire. And free starts per time
    window (compute.start_rate, keys "rate#..."), which expire with their window (TTL)."""

    class Meta(TableMeta):
        table_name = "counters"
        billing_mode = "PAY_PER_REQUEST"

    environment = UnicodeAttribute(hash_key=True)
    running = NumberAttribute(default=0)
    # Set on an environment's own item while the operator drains it (chalicelib.admin): the start
    # transaction's condition refuses new jobs then; running jobs finish as usual.
    drained_at = NumberAttribute(null=True, attr_name="drainedAt")
    expires_at = TTLAttribute(null=True, attr_name="expiresAt")


class IndexerCursor(Model):
    """The asset indexer's progress on one chain (chalicelib.assets.indexer), kept in the counters
    table under the key `indexer#<chainId>`: the last block whose metadata events were all read,
    and that block's hash (a reorg below it is seen and the cursor steps back)."""

    class Meta(TableMeta):
        table_name = "counters"
        billing_mode = "PAY_PER_REQUEST"

    key = UnicodeAttribute(hash_key=True, attr_name="environment")  # the counters table's key
    block = NumberAttribute()
    block_hash = UnicodeAttribute(attr_name="blockHash", default="")
    updated_at = NumberAttribute(attr_name="updatedAt", default=0)


ALL_MODELS: tuple[type[Model], ...] = (NonceRecord, RevokedToken, JobRecord, OrderUse, AssetRecord, EnvironmentUsage,
                                       AuditEntry)

# Tables whose records carry a TTL attribute, with that attribute's name.
TTL_ATTRIBUTES = {RevokedToken: "expiresAt", JobRecord: "expiresAt", EnvironmentUsage: "expiresAt",
                  AuditEntry: "expiresAt"}


def bind(settings: Settings) -> None:
    """Point every model at the configured tables and region, dropping cached connections."""
    names = {
        NonceRecord: settings.nonces_table,
        RevokedToken: settings.revoked_tokens_table,
        JobRecord: settings.jobs_table,
        OrderUse: settings.orders_table,
        AssetRecord: settings.assets_table,
        EnvironmentUsage: settings.counters_table,
        IndexerCursor: settings.counters_table,
        AuditEntry: settings.audit_table,
    }
    names[UsedMessage] = settings.nonces_table  # a second kind of item in the nonces table
    names[NftCreator] = settings.assets_table  # and in the assets table
    for model, name in names.items():
        model.Meta.table_name = name
        model.Meta.region = settings.region
        model._connection = None
    _share_one_client(list(names))


def _share_one_client(models: list[type[Model]]) -> None:
    """One botocore DynamoDB client for every table. PynamoDB builds a session and a client per
    model (50-60 ms each: service model, endpoint rules): a signed stop touched two models and
    paid twice on a cold start. Table connections are built here (no network) and then share
    the first one's Connection, which keeps each table's schema."""
    shared = None
    added: set[str] = set()
    for model in models:
        table = model._get_connection()
        if shared is None:
            shared = table.connection
        elif model.Meta.table_name not in added:  # two models of one table share its schema
            shared.add_meta_table(table.get_meta_table())
        table.connection = shared
        added.add(model.Meta.table_name)
