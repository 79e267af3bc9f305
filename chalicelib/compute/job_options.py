"""What a consumer may attach to a job besides its inputs (Ocean Node's `metadata` and
`additionalViewers`), bounded so a record stays small, and who may read a job.

`metadata` is the consumer's own labels, stored with the job and answered in its status as
Ocean Node answers them (`DBComputeJobMetadata`: string, number or boolean values). Unsigned
status calls show it, as Ocean Node's do, so it is no place for secrets.

`encryptedDockerRegistryAuth` is the consumer's login to the algorithm image's registry, decrypted
by the edge and carried here to the start, which keeps it in Secrets Manager only while the job
exists (compute.registry_auth); never in the record.

`additionalViewers` may read a job (status, results, logs) but never stop or delete it: the
owner alone changes a job. A viewer proves who it is the way an owner does (a signature or
its own auth token); the job is found by its id, never listed among the viewer's own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

from pydantic_core import PydanticCustomError
from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StringConstraints

from chalicelib.compute.image_digests import RegistryLogin
from chalicelib.schemas import Address

MAX_METADATA_KEYS = 32
MAX_METADATA_BYTES = 4096
MAX_VIEWERS = 16

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
MetadataValue = Union[StrictBool, StrictInt, Annotated[StrictFloat, Field(allow_inf_nan=False)],
                      Annotated[str, StringConstraints(max_length=1024)]]


def _small(value: dict[str, Any]) -> dict[str, Any]:
    """The whole map within MAX_METADATA_BYTES of JSON: the record and every status answer carry it."""
    if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise PydanticCustomError("value_error", f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


def _distinct(value: list[str]) -> list[str]:
    """Viewers compare whatever their case: each address once, lower case."""
    return list(dict.fromkeys(address.lower() for address in value))


JobMetadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_KEYS,
                        description=f"The consumer's labels: at most {MAX_METADATA_KEYS} keys of printable ASCII "
                                    f"(≤ 64 chars) to a string, number or boolean, ≤ {MAX_METADATA_BYTES} bytes "
                                    "of JSON; answered in status (unsigned status too)."),
                        AfterValidator(_small)]
Viewers = Annotated[list[Address], Field(max_length=MAX_VIEWERS,
                    description=f"At most {MAX_VIEWERS} addresses that may read the job's status, results and "
                                "logs (by its jobId), but not stop or delete it."),
                    AfterValidator(_distinct)]


@dataclass(frozen=True)
class JobOptions:
    """What a start stores beside the job's inputs (compute.jobs writes it into the record)."""

    metadata: Optional[dict[str, Any]] = None
    viewers: tuple[str, ...] = ()
    registry_login: Optional[RegistryLogin] = None  # the consumer's, for the image's registry

    @classmethod
    def of(cls, metadata: Optional[dict[str, Any]], viewers: Optional[list[str]], owner: str,
           registry_login: Optional[RegistryLogin] = None) -> "JobOptions":
        """The owner is no viewer of its own job: naming it would only waste a place."""
        listed = tuple(address for address in (viewers or []) if address != owner.lower())
        return cls(metadata or None, listed, registry_login)


def may_read(owner: str, viewers: Optional[list[str]], caller: str) -> bool:
    """Whether `caller` may read a job of `owner` listing `viewers` (addresses, any case)."""
    who = caller.lower()
    return who == owner.lower() or who in (viewers or [])

