"""Job objects in S3: the inputs manifest (which holds decrypted URLs, so it is written with
server-side encryption and never leaves S3), result downloads through presigned URLs, deletion."""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ServiceUnavailable

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

    def write_manifest(self, job_id: str, manifest: dict[str, Any]) -> str:
        """Store the manifest; return its s3:// URI, the only thing Batch is told about it."""
        key = job_prefix(job_id) + "manifest.json"
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=json.dumps(manifest).encode(),
                ContentType="application/json", ServerSideEncryption="AES256",
            )
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        return self.manifest_uri(job_id)

    def manifest_uri(self, job_id: str) -> str:
        return f"s3://{self._bucket}/{job_prefix(job_id)}manifest.json"

    def manifest_exists(self, job_id: str) -> bool:
        """Whether the job's manifest was stored (a start killed before it was has none)."""
        try:
            self._s3.head_object(Bucket=self._bucket, Key=job_prefix(job_id) + "manifest.json")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        except BotoCoreError as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        return True

    def presigned_download(self, key: str, filename: str) -> str:
        """A short-lived GET URL that downloads under a safe name, whatever the algorithm called it."""
        safe = _SAFE_FILENAME.sub("_", filename.rsplit("/", 1)[-1]).strip("._") or "result"
        try:
            return self._s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": key, "ResponseContentDisposition": f'attachment; filename="{safe}"'},
                ExpiresIn=PRESIGNED_URL_SECONDS,
            )
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error

    def delete_job(self, job_id: str) -> int:
        """Delete everything under the job's prefix; return how many objects went."""
        deleted = 0
        try:
            paginator = self._s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=job_prefix(job_id)):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    answer = self._s3.delete_objects(Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True})
                    if answer.get("Errors"):
                        # DeleteObjects answers 200 even when it refused some keys: not deleted.
                        raise ServiceUnavailable("Result storage is unavailable, try again later")
                    deleted += len(keys)
        except (BotoCoreError, ClientError) as error:
            raise ServiceUnavailable("Result storage is unavailable, try again later") from error
        return deleted
