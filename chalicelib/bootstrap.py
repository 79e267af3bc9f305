"""Create the provider's tables (and, for a local stack, its bucket and Batch queues) if they do
not exist yet.

Run it as `python -m chalicelib.bootstrap [--bucket] [--batch]` against the moto server or an AWS
account; `bootstrap()` is also callable from a Lambda. It is idempotent.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Mapping

from pynamodb.exceptions import TableError

from chalicelib import aws, models
from chalicelib.config import Settings, load_settings
from chalicelib.errors import ConfigurationError
from chalicelib.payments import models as payment_models

logger = logging.getLogger(__name__)


def create_tables(settings: Settings) -> list[str]:
    models.bind(settings)
    created = []
    for model in models.ALL_MODELS + payment_models.bind(settings.region):
        try:
            model.create_table(wait=False, billing_mode="PAY_PER_REQUEST")
            created.append(model)
        except TableError as error:
            if getattr(error, "cause_response_code", None) != "ResourceInUseException":
                raise
    for model in created:
        _wait_active(model)
    for model in models.TTL_ATTRIBUTES:
        model.update_ttl(ignore_update_ttl_errors=True)
    return [model.Meta.table_name for model in created]


def _wait_active(model: type, timeout: float = 120.0) -> None:
    """Create all tables first, then wait: AWS builds them in parallel (PynamoDB's wait polls slowly)."""
    deadline = time.monotonic() + timeout
    while model.describe_table().get("TableStatus") != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {model.Meta.table_name} is not active after {timeout:.0f} s")
        time.sleep(0.5)


def create_bucket(settings: Settings) -> None:
    s3 = aws.client("s3")
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    if settings.bucket not in existing:
        if settings.region == "us-east-1":
            s3.create_bucket(Bucket=settings.bucket)
        else:
            s3.create_bucket(Bucket=settings.bucket, CreateBucketConfiguration={"LocationConstraint": settings.region})
    # Versioned as infra/resources.yaml makes it: manifests and results are read by version id
    # (chalicelib.results), so another job's write at the same key is never what is read.
    s3.put_bucket_versioning(Bucket=settings.bucket, VersioningConfiguration={"Status": "Enabled"})


BATCH_SERVICE_ROLE = "ocean-c2d-batch-service"
BATCH_INSTANCE_ROLE = "ocean-c2d-batch-instance"
_TRUST = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"%s"},"Action":"sts:AssumeRole"}]}'


def create_batch(environments: Mapping[str, Any] | None = None, timeout: float = 300.0) -> list[str]:
    """A managed SPOT compute environment (`<queue>-ce`) and the job queue of every configured
    environment (and of its networkJobQueue), in the default VPC, with the roles Batch needs; existing ones are kept.

    It gives a local stack (moto) the queues the Batch dispatcher submits to. In a real account
    the operator usually owns this infrastructure; this is a starting point, not a policy."""
    if environments is None:
        from chalicelib.compute.environments import load_environments

        environments = load_environments()
    iam, ec2, batch = aws.client("iam"), aws.client("ec2"), aws.client("batch")
    service_role = _ensure_role(iam, BATCH_SERVICE_ROLE, "batch.amazonaws.com",
                                "arn:aws:iam::aws:policy/service-role/AWSBatchServiceRole")
    instance_profile = _ensure_instance_profile(iam, BATCH_INSTANCE_ROLE)
    subnets, groups = _default_network(ec2)
    created: list[str] = []
    for queue in sorted({q for env in environments.values() for q in (env.job_queue, env.network_job_queue) if q}):
        # a network queue gets a compute environment of its own, never a sealed queue's (compute.environments)
        served = [env for env in environments.values() if queue in (env.job_queue, env.network_job_queue)]
        gpu = any(env.n_gpu for env in served)
        vcpus = sum(env.n_cpu * env.max_jobs for env in served)
        compute = f"{queue}-ce"
        if not batch.describe_compute_environments(computeEnvironments=[compute])["computeEnvironments"]:
            batch.create_compute_environment(
                computeEnvironmentName=compute, type="MANAGED", state="ENABLED", serviceRole=service_role,
                computeResources={"type": "SPOT", "allocationStrategy": "SPOT_CAPACITY_OPTIMIZED",
                                  "minvCpus": 0, "desiredvCpus": 0, "maxvCpus": max(vcpus, 2),
                                  "instanceTypes": ["g5"] if gpu else ["optimal"],
                                  "subnets": subnets, "securityGroupIds": groups,
                                  "instanceRole": instance_profile})
            created.append(compute)
        _wait_compute_environment(batch, compute, timeout)
        if not batch.describe_job_queues(jobQueues=[queue])["jobQueues"]:
            batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": compute}])
            created.append(queue)
    return created


def _ensure_role(iam: Any, name: str, service: str, policy_arn: str) -> str:
    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_TRUST % service)["Role"]["Arn"]
        try:
            iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
        except iam.exceptions.NoSuchEntityException:
            logger.warning("managed policy %s not found (moto loads none): role %s has no policy", policy_arn, name)
        return arn


def _ensure_instance_profile(iam: Any, name: str) -> str:
    _ensure_role(iam, name, "ec2.amazonaws.com",
                 "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role")
    try:
        return iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return arn


def _default_network(ec2: Any) -> tuple[list[str], list[str]]:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ConfigurationError("no default VPC: create the Batch compute environments yourself")
    vpc = [{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=vpc)["Subnets"]]
    groups = ec2.describe_security_groups(Filters=vpc + [{"Name": "group-name", "Values": ["default"]}])
    return subnets, [g["GroupId"] for g in groups["SecurityGroups"]]


def _wait_compute_environment(batch: Any, name: str, timeout: float) -> None:
    """A queue can only use a compute environment once AWS has finished creating it."""
    deadline = time.monotonic() + timeout
    while True:
        found = batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
        status = found[0].get("status", "VALID") if found else "MISSING"
        if status == "VALID":
            return
        if status in ("INVALID", "MISSING") or time.monotonic() > deadline:
            raise TimeoutError(f"compute environment {name} is {status}")
        time.sleep(2)


def bootstrap(settings: Settings, with_bucket: bool = False, with_batch: bool = False,
              environments: Mapping[str, Any] | None = None) -> list[str]:
    """Tables always; for local stacks the bucket and (opt-in: about a second on moto, and the
    local stack runs jobs as processes) the Batch compute environments and queues."""
    created = create_tables(settings)
    if with_bucket:
        create_bucket(settings)
    if with_batch:
        created += create_batch(environments)
    return created


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bucket", action="store_true", help="also create the results bucket (local stacks)")
    parser.add_argument("--batch", action="store_true",
                        help="also create each environment's Batch compute environment and job queue")
    args = parser.parse_args(argv)
    created = bootstrap(load_settings(), with_bucket=args.bucket, with_batch=args.batch)
    print("created: " + (", ".join(created) if created else "none (all existed)"))


if __name__ == "__main__":
    main()
