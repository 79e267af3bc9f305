"""May this algorithm container run here? Its DDO section must be complete and pinned
(entrypoint, image, a "sha256:" checksum: the original Provider's `validate_container`), and its
image must come from a registry the operator allows (ALGORITHM_REGISTRIES): the instances pull
with AWS credentials and from inside the VPC, so a consumer or publisher must not pick a private
registry. Checked at initializeCompute and start, before any order is checked or anything
reserved.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from chalicelib.config import ImageRegistries
from chalicelib.errors import BusinessError

IMAGE_REGISTRY_NOT_ALLOWED = "image_registry_not_allowed"


def container_error(container: Any) -> Optional[str]:
    """The original's validate_container code, or None."""
    if not isinstance(container, Mapping):
        return "missing_entrypoint_image_checksum"
    for key in ("entrypoint", "image", "checksum"):
        if not isinstance(container.get(key), str) or not container.get(key):
            return "missing_entrypoint_image_checksum"
    if not container["checksum"].startswith("sha256:"):
        return "checksum_prefix"
    return None


def container_fields(container: Mapping[str, Any]) -> dict[str, str]:
    """The container section as the plan and the manifest carry it: its four fields, as text."""
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
