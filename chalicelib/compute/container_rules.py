"""May this algorithm container run here? Its DDO section must name an entrypoint and an image,
and a checksum, if it gives one, must be "sha256:…" (the original Provider's `validate_container`
codes; the original also requires the checksum, Ocean Node does not, and since every start pins
the image to the digest its tag resolves to (compute.image_digests) a checksum is the
publisher's promise to check, not what keeps the image fixed). Its image must come from a
registry the operator allows (ALGORITHM_REGISTRIES): the instances pull with AWS credentials and
from inside the VPC, so a consumer or publisher must not pick a private registry. Checked at
initializeCompute and start, before any order is checked or anything reserved.

`AlgorithmContainer` is the same section as the dispatcher takes it: the image reference Batch
pulls (the digest pinned at start; the DDO's checksum where nothing pinned it), checked again
where it is used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from chalicelib.config import ImageRegistries
from chalicelib.errors import BusinessError, ValidationError

IMAGE_REGISTRY_NOT_ALLOWED = "image_registry_not_allowed"


def container_error(container: Any) -> Optional[str]:
    """The original's validate_container code, or None."""
    if not isinstance(container, Mapping):
        return "missing_entrypoint_image_checksum"
    for key in ("entrypoint", "image"):
        if not isinstance(container.get(key), str) or not container.get(key):
            return "missing_entrypoint_image_checksum"
    checksum = container.get("checksum")
    if checksum in (None, ""):
        return None
    if not isinstance(checksum, str) or not checksum.startswith("sha256:"):
        return "checksum_prefix"
    return None


def container_fields(container: Mapping[str, Any]) -> dict[str, str]:
    """The container section as the plan and the manifest carry it: its four fields, as text
    (a start adds `digest`, what it pinned the image to)."""
    return {key: str(container.get(key) or "") for key in ("entrypoint", "image", "tag", "checksum")}


def check_container(container: Any, registries: ImageRegistries) -> None:
    """The container fields (the original's codes), then the image's registry: a consumer or
    publisher must not make the instances pull from a registry the operator did not allow
    (the account's ECR, one inside the VPC)."""
    problem = container_error(container)
    if problem:
        raise BusinessError({"algorithm.container": problem})
    if not registries.allows(str(container["image"])):
        raise BusinessError({"algorithm.container": IMAGE_REGISTRY_NOT_ALLOWED})


_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_ENTRYPOINT = 4096


@dataclass(frozen=True)
class AlgorithmContainer:
    """The DDO's `algorithm.container`: image, tag, checksum (sha256:...), entrypoint, and the
    `digest` the start pinned the image to (compute.image_digests)."""

    image: str
    entrypoint: str
    tag: str = ""
    checksum: str = ""
    digest: str = ""

    @classmethod
    def from_metadata(cls, container: Mapping[str, Any] | None) -> "AlgorithmContainer":
        """Build and validate from DDO metadata; ValidationError names what is wrong."""
        if not isinstance(container, Mapping):
            raise ValidationError.field("algorithm", "the algorithm has no container")
        values = {k: container.get(k) or "" for k in ("image", "entrypoint", "tag", "checksum", "digest")}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValidationError.field("algorithm", "container image, tag, checksum and entrypoint must be text")
        made = cls(image=values["image"].strip(), entrypoint=values["entrypoint"].strip(),
                   tag=values["tag"].strip(), checksum=values["checksum"].strip().lower(),
                   digest=values["digest"].strip().lower())
        made.reference()
        return made

    def reference(self) -> str:
        """The image as Batch pulls it: `image@sha256:...` with the digest the start pinned, else
        the checksum, else `image:tag` (`latest` when neither the image nor the DDO names a tag)."""
        if not self.entrypoint or len(self.entrypoint) > MAX_ENTRYPOINT or "\x00" in self.entrypoint:
            raise ValidationError.field("algorithm", "container entrypoint is missing or malformed")
        name, _, digest = self.image.partition("@")
        if not _IMAGE.fullmatch(name) or "//" in name or name.endswith(("/", ":")):
            raise ValidationError.field("algorithm", "container image is missing or malformed")
        checksum = (self.digest or self.checksum or digest).lower()
        if checksum:
            if not _DIGEST.fullmatch(checksum) or (digest and digest.lower() != checksum):
                raise ValidationError.field("algorithm", "container checksum must be sha256:<64 hex digits>")
            reference = f"{_without_tag(name)}@{checksum}"
        elif _has_tag(name):
            reference = name
        else:
            tag = self.tag or "latest"
            if not _TAG.fullmatch(tag):
                raise ValidationError.field("algorithm", "container tag is malformed")
            reference = f"{name}:{tag}"
        if len(reference) > 255:
            raise ValidationError.field("algorithm", "container image reference is too long")
        return reference


def _has_tag(name: str) -> bool:
    return ":" in name.rsplit("/", 1)[-1]


def _without_tag(name: str) -> str:
    return name.rsplit(":", 1)[0] if _has_tag(name) else name
