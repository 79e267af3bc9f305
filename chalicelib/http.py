"""The HTTP edge: reading parameters, validating them with the request models, and turning every
error into the contract's envelope. It is the only place where exceptions become responses.

Every path is registered for all methods so a wrong method answers our own JSON 405 (API Gateway
would otherwise answer 403 "Missing Authentication Token").

A signed operation is authenticated here, before its route runs and before anything but its
signed parts is checked, so its nonce is spent first whatever refuses the request afterwards
(DESIGN §3.2: a signature is good once, on one route). Nothing here logs a query string, a body
or a header: signatures and tokens travel in them.
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from chalice import Chalice, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chalicelib.observability import context as observability
from chalicelib.errors import MethodNotAllowed, PayloadTooLarge, ProviderError, ValidationError
from chalicelib.observability import requests as request_report

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
    `raw_body` operation, the request body as bytes); for a signed operation, `caller`, the
    checksummed address whose signature or token was checked and whose nonce was spent (None
    only where the proof is optional and none was given)."""

    params: Any
    headers: Mapping[str, str]
    method: str
    body: bytes = b""
    caller: str | None = None

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
    # An alternative for a path and method that has an operation already: taken when it accepts
    # the request's raw parameters (query, body and path merged, before any validation).
    accepts: Callable[[Mapping[str, Any]], bool] | None = None


class Authenticate(Protocol):
    """Who calls a signed operation (services.authenticate_request): with `early`, on the request
    as sent (None: its signed parts are incomplete, the model will say why); afterwards, on the
    validated request (None only where the proof is optional). Refusals are raised."""

    def __call__(self, model: Any, raw: Mapping[str, Any], headers: Mapping[str, str], *, early: bool) -> str | None: ...


class Api:
    """Collects operations, then registers one Chalice view per path that dispatches by method
    (and, where one path and method serve two protocols, by what the request carries)."""

    def __init__(self, app: Chalice, authenticate: Authenticate | None = None):
        self.app = app
        self.authenticate = authenticate
        self.operations: list[Operation] = []
        self._paths: dict[str, dict[str, list[Operation]]] = {}

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
        accepts: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Callable[[Callable[[Call], Any]], Callable[[Call], Any]]:
        """Register `function` for `path` and `method`. With `raw_body` the body is not parsed as
        JSON: `model` validates the query string only and the function gets the bytes in `Call.body`.
        With `accepts`, the operation is an alternative to the path and method's own one, taken
        for the requests it accepts (the predicate must not raise on any input: it sees them raw)."""

        if signed and (model is None or self.authenticate is None):
            raise TypeError(f"signed operation {method} {path} needs a request model and the Api's authenticate")

        def register(function: Callable[[Call], Any]) -> Callable[[Call], Any]:
            operation = Operation(
                path, method, endpoint, function, model, summary, signed, in_body, responses or {}, raw_body, accepts
            )
            if path not in self._paths:
                self._paths[path] = {}
                self._register_path(path)
            existing = self._paths[path].get(method, [])
            if accepts is None:
                existing = [op for op in existing if op.accepts is not None]
            elif any(op.raw_body != raw_body for op in existing):
                raise ValueError(f"{method} {path}: an alternative must read the body as its operation does")
            self.operations.append(operation)
            self._paths[path][method] = [*existing, operation]
            return function

        return register

    def _register_path(self, path: str) -> None:
        def view(**path_params: str) -> Response:  # path parameters are read from the request
            request = self.app.current_request
            operations = self._paths[path].get(request.method)
            if not operations:
                allowed = ", ".join(sorted(self._paths[path]))
                return error_response(MethodNotAllowed(f"Method {request.method} not allowed; use {allowed}"), {"Allow": allowed})
            return handle(operations, request, self.authenticate)

        view.__name__ = "view_" + (path.strip("/").replace("/", "_") or "root")
        self.app.route(path, methods=METHODS, content_types=CONTENT_TYPES)(view)


def handle(operations: Operation | Sequence[Operation], request: Any, authenticate: Authenticate | None = None) -> Response:
    """Answer one request with the operation (or, of alternatives, the one that accepts it); its
    log line and metrics (chalicelib.observability) are written as it ends."""
    candidates = [operations] if isinstance(operations, Operation) else list(operations)
    operation = next((op for op in candidates if op.accepts is None), candidates[0])
    context = getattr(request, "context", None) or {}
    with observability.invocation("request", f"{operation.method} {operation.path}", route=operation.path,
                                  method=operation.method, requestId=context.get("requestId")) as served:
        result: Any = None
        response = _answer(candidates, operation, request, authenticate)
        if isinstance(response, tuple):
            response, result = response
        request_report.answered(served, operation.endpoint, operation.path, response.status_code, result)
        return response


def _answer(candidates: Sequence[Operation], operation: Operation, request: Any,
            authenticate: Authenticate | None) -> Response | tuple[Response, Any]:
    try:
        body = _body_bytes(request.raw_body)
        raw = read_params(request.query_params, None if operation.raw_body else body, getattr(request, "uri_params", None))
        operation = _chosen(candidates, raw, operation)
        headers = dict(request.headers or {})
        signed = operation.signed  # registered only with an authenticate (Api.route)
        caller = authenticate(operation.model, raw, headers, early=True) if signed else None  # type: ignore[misc]
        params = validate(operation.model, raw) if operation.model else raw
        if signed and caller is None:
            caller = authenticate(operation.model, raw, headers, early=False)  # type: ignore[misc]
        if operation.model:
            request_report.parameters(params)
        result = operation.function(Call(params, headers, request.method, body if operation.raw_body else b"", caller))
    except ProviderError as error:
        request_report.refused(error)
        if error.status_code >= 500:
            cause = error.__cause__
            logger.warning("%s %s: %s (%s)", operation.method, operation.path, error, type(cause).__name__ if cause else "-")
        return error_response(error)
    except Exception as error:  # the last line of defence: never a traceback to the caller
        # Frames and the type only: an unexpected error's message might carry request data
        # (a decrypted URL, a token), which must never reach a log line.
        request_report.refused(error)
        logger.error("Unhandled %s in %s %s\n%s", type(error).__name__, operation.method, operation.path,
                     "".join(traceback.format_tb(error.__traceback__)))
        return json_response({"error": "Internal error"}, 500)
    return (result, None) if isinstance(result, Response) else (json_response(result), result)


def _chosen(candidates: Sequence[Operation], raw: Mapping[str, Any], default: Operation) -> Operation:
    for operation in candidates:
        if operation.accepts is not None and operation.accepts(raw):
            return operation
    return default


def read_params(query: Any, raw_body: bytes | None, path: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Path parameters, query string and JSON body merged; a key given twice (or in two of them)
    is refused."""
    params: dict[str, Any] = dict(path or {})
    if query:
        for key in query.keys():
            values = query.getlist(key) if hasattr(query, "getlist") else [query[key]]
            if len(values) > 1 or key in params:
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
        message = {"missing": "required", "extra_forbidden": "not supported by this provider"}.get(item["type"], item["msg"])
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
    return json_response(error.body(), error.status_code, {**error.headers(), **(headers or {})})
