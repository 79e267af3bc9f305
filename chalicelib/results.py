"""Job objects in S3: the inputs manifest (which holds decrypted URLs: sealed with the job's own
key, chalicelib.job_key, written with server-side encryption, never leaving S3), result
downloads through presigned URLs, deletion.

The bucket is versioned (infra/resources.yaml), because every job's task role may write under
`jobs/` (IAM cannot tell one job's credentials from another's): the manifest is handed to the
job by its version id, and results are served by the version id publish reported in its signed
event, so what another job writes at the same key later is never what is read or downloaded."""
from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ServiceUnavailable
from chalicelib.job_key import seal_manifest

PRESIGNED_URL_SECONDS = 600
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


class JobObjects:
    def __init__(self, s3: Callable[[], Any], bucket: str):
        """`s3` is a factory: building the client costs tens of milliseconds that a status
        listing or a stop of a finished job never needs."""
        self._s3_factory = s3
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def _s3(self) -> Any:
        return self._s3_factory()

    def write_manifest(self, job_id: str, manifest: dict[str, Any], job_key: str) -> str:
        """Store the manifest sealed with the job's key; return its s3:// URI pinned to the
        version written (`?versionId=`), the only thing Batch is told about it."""
        key = job_prefix(job_id) + "manifest.json"
        try:
            written = self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=seal_manifest(job_key, job_id, manifest),
                ContentType="application/json", ServerSideEncryption="AES256",
            )
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        return self._pinned(key, written.get("VersionId"))

    def _pinned(self, key: str, version: str | None) -> str:
        """`s3://bucket/key`, with `?versionId=` when the bucket versions it."""
        pinned = f"?versionId={quote(version, safe='')}" if version and version != "null" else ""
        return f"s3://{self._bucket}/{key}{pinned}"

    def stored_manifest_uri(self, job_id: str) -> str | None:
        """The URI of the manifest a start stored, pinned to its current version (only the API
        writes manifests: the jobs' role cannot), or None when a start killed before it has none."""
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=job_prefix(job_id) + "manifest.json")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        except BotoCoreError as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        return self._pinned(job_prefix(job_id) + "manifest.json", head.get("VersionId"))

    def presigned_download(self, key: str, filename: str, version_id: str | None = None) -> str:
        """A short-lived GET URL that downloads under a safe name, whatever the algorithm called
        it; with `version_id` (what publish reported), exactly that version of the object."""
        safe = _SAFE_FILENAME.sub("_", filename.rsplit("/", 1)[-1]).strip("._") or "result"
        params = {"Bucket": self._bucket, "Key": key, "ResponseContentDisposition": f'attachment; filename="{safe}"'}
        if version_id:
            params["VersionId"] = version_id
        try:
            return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGNED_URL_SECONDS)
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error

    def delete_job(self, job_id: str) -> int:
        """Delete everything under the job's prefix, every version of it (a delete marker alone
        would leave the pinned versions downloadable); return how many versions went."""
        deleted = 0
        try:
            paginator = self._s3.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=job_prefix(job_id)):
                keys = [{"Key": item["Key"], "VersionId": item["VersionId"]}
                        for item in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if keys:
                    answer = self._s3.delete_objects(Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True})
                    if answer.get("Errors"):
                        # DeleteObjects answers 200 even when it refused some keys: not deleted.
                        raise ServiceUnavailable("Result storage is unavailable, try again later")
                    deleted += len(keys)
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        return deleted
