"""The control endpoint: a small HTTP/1.1 JSON API on the broker's own Kafka port for editing fault rules
(``broker/faults.py``) from outside the process (``moldau fault``, ``FaultClient``, curl).

Served only with ``control.endpoint.enable=true`` (the ci profile): the connection looks at a new
socket's first four bytes, and an HTTP method there (``GET ``, ``POST``, ``PUT ``, ``DELE``, ...) hands
the socket to ``ControlProtocol``. Read as a Kafka size prefix those bytes announce a frame of over a
gigabyte, which Kafka refuses by closing the connection, so the two cannot be confused. With the
setting off the bytes are never looked at and such a connection is closed as before.

Routes (JSON in and out):

- ``GET /faults``: ``{"rules": [rule, ...]}``
- ``POST /faults`` with a rule (``{"kind": "fail", "api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER",
  "count": 3}``): 201 and the rule with its ``id``
- ``DELETE /faults``: clear every rule, or those matching ``?kind=&topic=&partition=``: ``{"cleared": n}``
- ``DELETE /faults/<id>``: ``{"cleared": 1}``, or 404

Errors are ``{"error": "..."}`` with 400 (bad JSON or rule), 404 (unknown route or rule), 405, 411, 413
or 501. One request per connection (``Connection: close``), with a ``Content-Length`` body only, at
most ``MAX_REQUEST_BYTES`` in all. Every request is logged as one ``control.request`` line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from broker.faults import RULE_FIELDS, FaultInjector

log = structlog.get_logger()

# The first four bytes of an HTTP/1.1 request line, for the methods anyone would send.
HTTP_PREFIXES = (b"GET ", b"POST", b"PUT ", b"DELE", b"HEAD", b"PATC", b"OPTI")
MAX_REQUEST_BYTES = 64 * 1024
_HEADER_END = b"\r\n\r\n"
_CLEAR_FILTERS = ("kind", "topic", "partition")


def could_be_control(head: bytes) -> bool:
    """Whether a connection starting with ``head`` (fewer than four bytes) may still be an HTTP request."""
    return any(prefix.startswith(head) for prefix in HTTP_PREFIXES)


def is_control_request(head: bytes) -> bool:
    """Whether a connection's first bytes (at least four) start an HTTP request."""
    return head[:4] in HTTP_PREFIXES


class HttpError(Exception):
    """An answer other than success: its status and message."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ControlProtocol(asyncio.Protocol):
    """One control-endpoint connection: read one request, answer it, close.

    It takes over a Kafka connection's transport (``transport.set_protocol``); ``on_lost`` is called
    when the socket closes, so the Kafka connection that owned it releases its slot in the broker."""

    def __init__(self, faults: FaultInjector, peer: str, on_lost: Callable[[Exception | None], None]) -> None:
        self._faults = faults
        self._peer = peer
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # one request per connection; anything after it is ignored until the close
        self._buffer += data
        try:
            request = self._parse()
        except HttpError as exc:
            self._fail(exc, None, None)
            return
        if request is None:
            return
        method, target, body = request
        try:
            status, answer = self._route(method, target, body)
        except HttpError as exc:
            self._fail(exc, method, target)
            return
        except Exception:  # a bug here must cost one answer, not the broker
            log.exception("control.internal_error", peer=self._peer, method=method, target=target)
            self._fail(HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the broker log"),
                       method, target)
            return
        log.info("control.request", peer=self._peer, method=method, target=target, status=int(status))
        self._respond(status, answer)

    def eof_received(self) -> bool:
        if not self._answered:
            # The client half-closed before a whole request arrived.
            self._fail(HttpError(HTTPStatus.BAD_REQUEST, "incomplete request"), None, None)
        return False

    # ------------------------------------------------------------ parsing

    def _parse(self) -> tuple[str, str, bytes] | None:
        """(method, target, body) once the whole request is in; None while more is needed."""
        buffer = self._buffer
        end = buffer.find(_HEADER_END)
        if end < 0:
            if len(buffer) > MAX_REQUEST_BYTES:
                raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                f"request head over {MAX_REQUEST_BYTES} bytes")
            return None
        try:
            head = bytes(buffer[:end]).decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            raise HttpError(HTTPStatus.BAD_REQUEST, "request head is not text") from None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad request line {lines[0][:200]!r}")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(HTTPStatus.BAD_REQUEST, f"bad header line {line[:200]!r}")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise HttpError(HTTPStatus.NOT_IMPLEMENTED,
                            "Transfer-Encoding is not supported: send the body with a Content-Length")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_text[:50]!r}")
        length = int(length_text)
        body_start = end + len(_HEADER_END)
        if body_start + length > MAX_REQUEST_BYTES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request over {MAX_REQUEST_BYTES} bytes")
        if len(buffer) < body_start + length:
            return None
        return method, target, bytes(buffer[body_start:body_start + length])

    # ------------------------------------------------------------ routes

    def _route(self, method: str, target: str, body: bytes) -> tuple[HTTPStatus, Any]:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path == "/faults":
            if method == "GET":
                return HTTPStatus.OK, {"rules": self._faults.rules()}
            if method == "POST":
                fields = _json_object(body)
                unknown = sorted(set(fields) - set(RULE_FIELDS))
                if unknown:
                    raise HttpError(HTTPStatus.BAD_REQUEST, f"unknown field(s) {', '.join(unknown)}; rule fields "
                                                            f"are {', '.join(RULE_FIELDS)}")
                kind = fields.pop("kind", None)
                if kind is None:
                    raise HttpError(HTTPStatus.BAD_REQUEST, "the rule needs a 'kind'")
                return HTTPStatus.CREATED, _refused_as_400(lambda: self._faults.add(kind, **fields))
            if method == "DELETE":
                filters = _clear_filters(url.query)
                return HTTPStatus.OK, {"cleared": _refused_as_400(lambda: self._faults.clear(**filters))}
            raise _not_allowed("GET, POST, DELETE")
        if path.startswith("/faults/") and path.count("/") == 2:
            text = unquote(path.rpartition("/")[2])
            if method != "DELETE":
                raise _not_allowed("DELETE")
            if not text.isdigit():
                raise HttpError(HTTPStatus.NOT_FOUND, f"no fault rule {text!r}: rule ids are integers")
            cleared = self._faults.clear(int(text))
            if not cleared:
                raise HttpError(HTTPStatus.NOT_FOUND, f"no fault rule {text}")
            return HTTPStatus.OK, {"cleared": cleared}
        raise HttpError(HTTPStatus.NOT_FOUND, f"no route {path!r}: the control endpoint serves /faults")

    # ------------------------------------------------------------ answering

    def _fail(self, exc: HttpError, method: str | None, target: str | None) -> None:
        log.info("control.request", peer=self._peer, method=method, target=target, status=int(exc.status),
                 reason=exc.message)
        self._respond(exc.status, {"error": exc.message}, exc.headers)

    def _respond(self, status: HTTPStatus, answer: Any, headers: dict[str, str] | None = None) -> None:
        self._answered = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        payload = json.dumps(answer).encode()
        head = [f"HTTP/1.1 {int(status)} {status.phrase}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}", "Connection: close"]
        head.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        transport.close()  # after the write is flushed


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise HttpError(HTTPStatus.LENGTH_REQUIRED, "POST /faults needs a JSON body with a Content-Length")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _clear_filters(query: str) -> dict[str, Any]:
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=10)
    except ValueError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"bad query string: {exc}") from None
    unknown = sorted(set(params) - set(_CLEAR_FILTERS))
    if unknown:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"unknown filter(s) {', '.join(unknown)}; use "
                                                f"{', '.join(_CLEAR_FILTERS)}")
    filters: dict[str, Any] = {name: values[-1] for name, values in params.items()}
    if "partition" in filters:
        if not filters["partition"].isdigit():
            raise HttpError(HTTPStatus.BAD_REQUEST, f"partition must be an integer, got {filters['partition']!r}")
        filters["partition"] = int(filters["partition"])
    return filters


def _refused_as_400(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except ValueError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None


def _not_allowed(allowed: str) -> HttpError:
    return HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"method not allowed; use {allowed}", {"Allow": allowed})
