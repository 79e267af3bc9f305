"""May this consumer use this dataset's service here, and with what? The rules the validator
applies to each input (and, where the original applies them to both, to the algorithm's asset):
the service exists and is of the right type, the asset is consumable (NFT state, address
credentials: the original Provider's `check_asset_consumable` and ConsumableCodes), the service is
served by this provider, its `s3` files lie where the operator lets its publisher point, and the
consumer's userdata fits the DDO's consumerParameters (ocean-node's rules).

`s3` file objects are a place the jobs' credentials can read, so a publisher may name only the
places the operator gave it (S3_FILE_SOURCES: bucket or bucket/prefix ARNs → the publisher
addresses, NFT owners, that may use them; chalicelib.config.S3FileSources); anything else is
refused at initializeCompute and start with `{"<input or algorithm>": "s3_source_not_allowed"}`.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Protocol, Sequence
from urllib.parse import urlsplit

from chalicelib.compute.plan import AssetLike, FileObject
from chalicelib.errors import BusinessError

CONSUMABLE_STATES = (0, 5)  # NFT metadata states the original serves: active, and ordering disabled
NOT_IN_ALLOW_LIST, IN_DENY_LIST = 3, 4  # the original's ConsumableCodes


class S3Places(Protocol):
    """Which publishers may name which S3 places (chalicelib.config.S3FileSources fits)."""

    def allows(self, publisher: str, bucket: str, key: str) -> bool: ...


def find_service(ddo: Mapping[str, Any], service_id: str) -> Optional[tuple[int, Mapping[str, Any]]]:
    """(index in ddo.services, service) of the service with this id; the index is the order's serviceIndex."""
    services = ddo.get("services")
    if not isinstance(services, list):
        return None
    for index, service in enumerate(services):
        if isinstance(service, Mapping) and str(service.get("id")) == service_id:
            return index, service
    return None


def nft_field(asset: AssetLike, name: str) -> Any:
    value = getattr(asset, name, None)
    if value is not None:
        return value
    nft = asset.ddo.get("nft")
    return nft.get(name) if isinstance(nft, Mapping) else None


def _addressas_list(credentials: Any, access_class: str) -> Optional[list[str]]:
    """Lower-cased addresses of the first "address" entry of allow/deny; None if malformed."""
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            return None
    if not credentials:
        return []
    if not isinstance(credentials, Mapping):
        return None
    entries = credentials.get(access_class) or []
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("type") == "address":
            values = entry.get("values")
            if not isinstance(values, list):
                return None
            return [str(v).lower() for v in values]
    return []


def access_denied_code(credentials: Any, consumer: str) -> int:
    """0 if the address credentials let `consumer` in, else the original's ConsumableCodes value."""
    allowed = _addressas_list(credentials, "allow")
    denied = _addressas_list(credentials, "deny")
    if allowed is None or denied is None:
        return NOT_IN_ALLOW_LIST  # malformed credentials never let anyone in
    if allowed and consumer.lower() not in allowed:
        return NOT_IN_ALLOW_LIST
    if not allowed and consumer.lower() in denied:
        return IN_DENY_LIST
    return 0


def consumable_error(asset: AssetLike, consumer: str) -> Optional[str]:
    """The original's check_asset_consumable message, or None when the consumer may use it."""
    if not asset.ddo.get("metadata"):
        return "Asset is not consumable."
    nft = asset.ddo.get("nft")
    states = (getattr(asset, "state", None), nft.get("state") if isinstance(nft, Mapping) else None)
    if any(state is not None and state not in CONSUMABLE_STATES for state in states):
        return "Asset is not consumable."
    code = access_denied_code(asset.ddo.get("credentials"), consumer)
    if code:
        return f"Error: Access to asset {asset.did} was denied with code: {code}."
    return None


def _normalized_endpoint(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url.strip())
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = (parts.hostname or "") + (f":{port}" if port and port != default else "")
    return parts.scheme.lower(), host.lower(), parts.path.rstrip("/")


def same_endpoint(a: str, b: str) -> bool:
    """Same provider URL up to case of scheme/host, default ports and a trailing slash."""
    try:
        return _normalized_endpoint(a) == _normalized_endpoint(b)
    except ValueError:
        return False


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _matches_type(kind: Any, value: Any, parameter: Mapping[str, Any]) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "number":
        return _is_number(value)
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if kind == "select":
        options = parameter.get("options")
        keys = {str(k) for o in options for k in o} if isinstance(options, list) and all(
            isinstance(o, Mapping) for o in options) else set()
        return str(value) in keys
    return True  # a type this provider does not know: the algorithm judges


def apply_consumer_parameters(resource: str, parameters: Any, userdata: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """userdata checked against a DDO's consumerParameters (ocean-node's rules): a required one
    must be given, a given one must have its type, a missing optional one takes its default."""
    values = dict(userdata or {})
    if not isinstance(parameters, list):
        return values
    for parameter in parameters:
        if not isinstance(parameter, Mapping) or not isinstance(parameter.get("name"), str):
            continue
        name = parameter["name"][:64]
        value = values.get(parameter["name"])
        if value is None:
            if parameter.get("required") is True:
                raise BusinessError({f"{resource}.userdata.{name}": "missing"})
            if parameter.get("default") is not None:
                values[parameter["name"]] = parameter["default"]
            continue
        if not _matches_type(parameter.get("type"), value, parameter):
            raise BusinessError({f"{resource}.userdata.{name}": "invalid"})
    return values


def allows_network(service: Mapping[str, Any]) -> bool:
    """allowNetworkAccess of a compute service, exactly `true`; anything else means no."""
    compute = service.get("compute")
    return service.get("type") == "compute" and isinstance(compute, Mapping) and compute.get("allowNetworkAccess") is True


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def service_timeout(service: Mapping[str, Any]) -> int:
    try:
        return max(0, int(service.get("timeout") or 0))
    except (TypeError, ValueError):
        return 0


def check_s3_places(s3_sources: Optional[S3Places], resource: str, files: Sequence[FileObject],
                    publisher: Optional[str]) -> None:
    """Every `s3` file must lie in a place the operator gave this publisher (the NFT owner):
    the jobs' credentials can read more than one publisher's objects."""
    for spec in files:
        if not isinstance(spec, Mapping) or spec.get("type") != "s3":
            continue
        bucket, key = spec.get("bucket"), spec.get("objectKey")
        if (s3_sources is None or not publisher or not isinstance(bucket, str)
                or not isinstance(key, str) or not s3_sources.allows(publisher, bucket, key)):
            raise BusinessError({resource: "s3_source_not_allowed"})
