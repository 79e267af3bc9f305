"""The HTTP edge: reading parameters, validating them with the request models, and turning every
error into the contract's envelope. It is the only place where exceptions become responses.

Every path is registered for all methods so a wrong method answers our own JSON 405 (API Gateway
would otherwise answer 403 "Missing Authentication Token").
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from chalice import Chalice, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chalicelib.errors import MethodNotAllowed, PayloadTooLarge, ProviderError, ValidationError

logger = logging.getLogger(__name__)

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
# Every content type reaches our handler, so a body we cannot read gets our 400 envelope rather
# than Chalice's own 415 {Code, Message}; bodies are JSON except on raw-body routes (encrypt).
CONTENT_TYPES = ["*/*"]
MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
# JSON strings (whatever they hold) and everything but brackets, for the depth check.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]++")
_DEEP_RUN = re.compile(rb"[\[{]{%d}" % (MAX_JSON_DEPTH + 1))


@dataclass
class Call:
    """What a route function gets: validated parameters and the request headers (and, for a
    `raw_body` operation, the request body as bytes)."""

    params: Any
    headers: Mapping[str, str]
    method: str
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class Operation:
    path: str
    method: str
    endpoint: str
    function: Callable[[Call], Any]
    model: type[BaseModel] | None
    summary: str
    signed: bool
    in_body: bool
    responses: dict[str, str] = field(default_factory=dict)
    raw_body: bool = False


class Api:
    """Collects operations, then registers one Chalice view per path that dispatches by method."""

    def __init__(self, app: Chalice):
        self.app = app
        self.operations: list[Operation] = []
        self._paths: dict[str, dict[str, Operation]] = {}

    def route(
        self,
        path: str,
        method: str,
        endpoint: str,
        model: type[BaseModel] | None = None,
        summary: str = "",
        signed: bool = False,
        in_body: bool = False,
        responses: dict[str, str] | None = None,
        raw_body: bool = False,
    ) -> Callable[[Callable[[Call], Any]], Callable[[Call], Any]]:
        """Register `function` for `path` and `method`. With `raw_body` the body is not parsed as
        JSON: `model` validates the query string only and the function gets the bytes in `Call.body`."""

        def register(function: Callable[[Call], Any]) -> Callable[[Call], Any]:
            operation = Operation(
                path, method, endpoint, function, model, summary, signed, in_body, responses or {}, raw_body
            )
            self.operations.append(operation)
            if path not in self._paths:
                self._paths[path] = {}
                self._register_path(path)
            self._paths[path][method] = operation
            return function

        return register

    def _register_path(self, path: str) -> None:
        def view() -> Response:
            request = self.app.current_request
            operation = self._paths[path].get(request.method)
            if operation is None:
                allowed = ", ".join(sorted(self._paths[path]))
                return error_response(MethodNotAllowed(f"Method {request.method} not allowed; use {allowed}"), {"Allow": allowed})
            return handle(operation, request)

        view.__name__ = "view_" + (path.strip("/").replace("/", "_") or "root")
        self.app.route(path, methods=METHODS, content_types=CONTENT_TYPES)(view)


def handle(operation: Operation, request: Any) -> Response:
    try:
        body = _body_bytes(request.raw_body)
        raw = read_params(request.query_params, None if operation.raw_body else body)
        params = validate(operation.model, raw) if operation.model else raw
        headers = dict(request.headers or {})
        result = operation.function(Call(params, headers, request.method, body if operation.raw_body else b""))
    except ProviderError as error:
        if error.status_code >= 500:
            cause = error.__cause__
            logger.warning("%s %s: %s (%s)", operation.method, operation.path, error, type(cause).__name__ if cause else "-")
        return error_response(error)
    except Exception as error:  # the last line of defence: never a traceback to the caller
        # Frames and the type only: an unexpected error's message might carry request data
        # (a decrypted URL, a token), which must never reach a log line.
        logger.error("Unhandled %s in %s %s\n%s", type(error).__name__, operation.method, operation.path,
                     "".join(traceback.format_tb(error.__traceback__)))
        return json_response({"error": "Internal error"}, 500)
    return result if isinstance(result, Response) else json_response(result)


def read_params(query: Any, raw_body: bytes | None) -> dict[str, Any]:
    """Query string and JSON body merged; a key given twice (or in both) is refused."""
    params: dict[str, Any] = {}
    if query:
        for key in query.keys():
            values = query.getlist(key) if hasattr(query, "getlist") else [query[key]]
            if len(values) > 1:
                raise ValidationError.field(key, "given more than once")
            params[key] = values[0]
    body = _parse_body(raw_body)
    for key, value in body.items():
        if key in params and params[key] != value:
            raise ValidationError.field(key, "given in both the query string and the body with different values")
        params[key] = value
    return params


def _body_bytes(raw_body: bytes | str | None) -> bytes:
    """The request body as bytes, refused above MAX_BODY_BYTES whatever the route does with it."""
    body = raw_body.encode("utf-8") if isinstance(raw_body, str) else (raw_body or b"")
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    return body


def within_depth(text: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests at most `limit` arrays/objects, found without parsing it.

    The parsers recurse once per level, guarded only by the recursion limit, and importing web3
    raises that to 100,000 (py_ecc): a 100,000-deep body then overflows the C stack and kills
    the process instead of raising RecursionError. So depth is checked first, in linear time
    and without recursion: drop strings and everything but brackets, then remove innermost
    pairs `[]`/`{}` once per level; valid JSON is gone after `limit` rounds. (Invalid JSON may
    leave brackets behind too: it is refused either way.)"""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:
        return True
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", data))
    if limit == MAX_JSON_DEPTH and _DEEP_RUN.search(brackets):
        return False  # the usual attack, `[[[[...`, without the rounds below
    for _ in range(limit):
        if not brackets:
            return True
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    return not brackets


def _parse_body(raw_body: bytes | None) -> dict[str, Any]:
    if not raw_body or not raw_body.strip():
        return {}
    if len(raw_body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    if not within_depth(raw_body):
        raise ValidationError.field("body", f"body is not valid JSON or is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError.field("body", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError.field("body", "body must be a JSON object")
    return body


def validate(model: type[BaseModel], raw: Mapping[str, Any]) -> BaseModel:
    try:
        return model.model_validate(raw)
    except PydanticValidationError as error:
        raise ValidationError(_field_errors(error)) from None
    except RecursionError:
        raise ValidationError.field("body", "body is nested too deeply") from None


def _field_errors(error: PydanticValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"] if not _is_union_branch(part)) or "body"
        message = "required" if item["type"] == "missing" else item["msg"]
        errors.setdefault(location, [])
        if message not in errors[location]:
            errors[location].append(message)
    return errors


def _is_union_branch(part: object) -> bool:
    """pydantic names union branches in error locations (e.g. 'str', 'int'); callers don't care."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("constrained-"))


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body=json.dumps(body), status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def error_response(error: ProviderError, headers: Mapping[str, str] | None = None) -> Response:
    """The error's envelope and status, with the headers it carries (a 429's Retry-After)."""
    return json_response(error.body(), error.status_code, {**getattr(error, "headers", {}), **(headers or {})})
