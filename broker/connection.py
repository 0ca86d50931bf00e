"""One client connection: frames in, dispatch to handlers, responses out in request order.

Requests on a connection may be handled concurrently (handlers may be async), but responses are
written strictly in request order, which Kafka clients rely on: each request gets a slot in a FIFO and
only completed slots at its head are written. A handler returning None sends nothing (acks=0 Produce)
and its slot is simply skipped.

Backpressure: reading pauses while ``queued.max.requests`` requests are in flight, while the connection's
queued request bytes reach ``queued.max.request.bytes.per.connection``, while the broker-wide budget
``queued.max.request.bytes`` is spent (see ``broker/connection_limits.py``; a frame being received counts
by its announced size), or while the transport's write buffer is full; it resumes when they drain.
Connections over ``max.connections`` / ``max.connections.per.ip`` are closed on arrival, and ones over
``max.connection.creation.rate`` are not read from until their turn.

A handler that raises gets its request answered with UNKNOWN_SERVER_ERROR in the API's own response
shape (``protocol/error_responses.py``) and the connection stays open, as in Kafka; the bug is logged
with its traceback. An acks=0 Produce has no response, so that connection is closed instead.

Bad input closes the connection, never the broker, as Kafka does: an unacceptable frame size, a header
or body that does not decode, an unknown API key, or an unsupported version of a known API. The one
exception is an unsupported ApiVersions version, which gets a v0-format UNSUPPORTED_VERSION answer
listing the served ranges, so the client can retry on the same connection (KIP-511).

Security (``broker/security/``): on SSL and SASL_SSL listeners a ``TlsSession`` sits between the socket
and the framing (received bytes are decrypted before frames are cut, responses encrypted as they are
written); a failed handshake is one log line and a closed connection. On SASL listeners the connection's
``SaslAuthenticator`` decides, per request, whether it may be served yet; anything before authentication
other than ApiVersions and SaslHandshake closes the connection, and after a v0 SaslHandshake frames are
bare SASL tokens. Client quotas (``broker/quotas.py``) mute a connection (stop reading it) for the
throttle time of a request over its quota; while quotas exist each request's handling time is metered
for ``request_percentage``.

Fault injection (``broker/faults.py``): while the broker has fault rules (``faults.active``), each decoded
request is shown to them before its handler runs; a rule may answer it with an error, hold its response
back, close the connection when the request reaches the head of the FIFO, or leave it unanswered (its
slot stays until the client gives up and closes, which frees it like any other). With
``control.endpoint.enable`` on, a connection whose first bytes are an HTTP method is handed to the
control endpoint (``broker/control.py``) instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from broker.config import format_address
from broker.connection_limits import REQUEST_OVERHEAD_BYTES
from broker.faults import CLOSE, DELAY, FAIL, RequestFault
from broker.handlers import API_VERSIONS, CloseConnection, ConnectionInfo, RawFrame, RequestContext, ThenClose
from protocol import codec
from protocol.error_responses import error_response
from protocol.errors import ErrorCode
from protocol.framing import FrameDecoder, FrameSizeError, GatheredFrame

if TYPE_CHECKING:
    import ssl

    from broker.listeners import Listener
    from broker.security.tls import TlsSession
    from broker.server import Broker

log = structlog.get_logger()

# Request bytes one connection dispatches per turn of the event loop; past them it yields to the others.
PUMP_TURN_BYTES = 1 << 20


class _Slot:
    """A request's place in the response order."""

    __slots__ = ("api_key", "api_version", "charge", "correlation_id", "done", "meter", "request", "response",
                 "task")

    def __init__(self, api_key: int, api_version: int, correlation_id: int, charge: int,
                 request: Any = None) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.charge = charge  # request bytes held until the response is written
        self.request = request  # the decoded body, to build an error response if the handler fails
        self.done = False
        self.response: Any = None
        self.task: asyncio.Future[Any] | None = None
        self.meter: _RequestTime | None = None  # handling time, when request quotas are on


# Not held to request quotas: what a client needs to connect and authenticate.
_UNMETERED_APIS = frozenset({API_VERSIONS, 17, 36})


class _RequestTime:
    """The event-loop time a request's handler takes: its first call plus every later step of its
    coroutine (waiting, e.g. a Fetch's long poll, does not count, as Kafka counts thread time)."""

    __slots__ = ("client_id", "elapsed_s")

    def __init__(self, elapsed_s: float, client_id: str | None) -> None:
        self.elapsed_s = elapsed_s
        self.client_id = client_id

    async def wrap(self, awaitable: Any) -> Any:
        return await _TimedSteps(awaitable.__await__(), self)


class _TimedSteps:
    """Drives a coroutine's steps and adds each one's duration to a meter."""

    __slots__ = ("_iterator", "_meter")

    def __init__(self, iterator: Any, meter: _RequestTime) -> None:
        self._iterator = iterator
        self._meter = meter

    def __await__(self) -> Any:
        iterator = self._iterator
        clock = time.perf_counter
        value: Any = None
        error: BaseException | None = None
        while True:
            started = clock()
            try:
                yielded = iterator.throw(error) if error is not None else iterator.send(value)
            except StopIteration as stop:
                self._meter.elapsed_s += clock() - started
                return stop.value
            self._meter.elapsed_s += clock() - started
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as await would
                value, error = None, exc


class Connection(asyncio.Protocol):
    """The asyncio protocol for one accepted client socket."""

    def __init__(self, broker: Broker, listener: Listener) -> None:
        self._broker = broker
        self._listener = listener
        config = broker.config
        self._max_in_flight = config.queued_max_requests
        self._max_bytes = config.queued_max_request_bytes_per_connection
        self._memory = broker.request_memory
        self._throttle = broker.log_throttle
        self._idle_s = config.connections_max_idle_ms / 1000 if config.connections_max_idle_ms >= 0 else None
        # Large frames are put together off the event loop (_assemble): that copy would stall every client.
        self._decoder = FrameDecoder(config.socket_request_max_bytes, defer_assembly=True)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Slot] = deque()
        self._backlog: deque[bytearray | GatheredFrame] = deque()
        self._assembling = False  # the large frame at the backlog's head is being put together
        self._assembly_charge = 0  # charged meanwhile: its pieces and the copy coexist
        self._queued_bytes = 0  # charged to the broker's request memory: frames queued, in flight, arriving
        self._partial_charge = 0  # the part of it for the frame being received
        self._partial_admitted = False  # that frame is charged its announced size and may be read whole
        self._admitted = False
        self._throttled = False
        self._muted = False  # a client quota's throttle time is running (KIP-219)
        self._reading_paused = False
        self._writing_paused = False
        self._pumping = False
        self._closing = False
        self._close_reason = "peer closed"
        self._last_active = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._sniffed = b""  # the first bytes, while they may still start a control-endpoint request
        assert listener.advertised is not None
        self.info = ConnectionInfo(peer="?", listener=listener.name, security_protocol=listener.spec.security_protocol,
                                   advertised=listener.advertised)
        self.info.mute = self.mute
        self._tls: TlsSession | None = None
        self._send = self._send_plain
        self.host = "?"
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.host = str(peer[0])
            self.info.host = self.host
            self.info.peer = format_address(self.host, int(peer[1]))
        limits = self._broker.connection_limits
        refused = limits.admit(self.host)
        if refused is not None:
            self._throttle.warning("connection.rejected", self.host, peer=self.info.peer, reason=refused)
            self._closing = True
            self._close_reason = refused
            transport.abort()  # nothing was sent and nothing will be: a reset frees the socket at once
            return
        self._admitted = True
        self._broker.connection_opened(self)
        log.debug("connection.opened", peer=self.info.peer)
        delay = limits.creation_delay()
        if delay > 0:
            # max.connection.creation.rate: served when its turn comes, not refused.
            self._throttled = True
            self._loop.call_later(delay, self._end_creation_throttle)
        self.update_reading()  # not even the first read while the request budget is spent
        self._arm_idle_timer()
        listener = self._listener
        if listener.sasl is not None:
            self.info.sasl = listener.sasl.authenticator(self.info)
        if listener.tls is not None:
            self._start_tls(listener.tls.current())
        elif self._broker.config.control_endpoint_enable:
            # Only the first bytes can start an HTTP request: an instance attribute shadows
            # data_received until they are in and then goes, so Kafka traffic never pays for the check.
            self.data_received = self._sniff_first_bytes  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._closing:
            self._close_reason = f"socket error: {exc}"
        self._closing = True
        self._cancel_pending()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if not self._admitted:
            if not self.closed.done():
                self.closed.set_result(None)
            return
        self._admitted = False
        self._broker.connection_limits.release(self.host)
        self._broker.connection_closed(self)
        log.debug("connection.closed", peer=self.info.peer, reason=self._close_reason)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_active = self._loop.time()
        decoder = self._decoder
        try:
            frames = decoder.feed(data)
        except FrameSizeError as exc:
            self._throttle.warning("request.frame_size_rejected", self.host, peer=self.info.peer, size=exc.size,
                                   max_size=exc.max_size, reason=str(exc))
            self.close(f"frame size {exc.size} rejected")
            return
        # Charge the broker's request memory: whole frames as they queue, and the frame being received.
        if frames:
            # The frame that was being received is complete: its charge moves to the frame itself, and
            # the frame being received now, if any, is a new one.
            delta = -self._partial_charge
            self._partial_charge = 0
            self._partial_admitted = False
            for frame in frames:
                delta += len(frame) + REQUEST_OVERHEAD_BYTES
            self._charge(delta)
        self._charge_partial()
        if frames:
            self._backlog.extend(frames)
            self._pump()
        else:
            self.update_reading()

    def eof_received(self) -> bool:
        self._close_reason = "peer closed"
        return False

    def _sniff_first_bytes(self, data: bytes) -> None:
        """data_received while the control endpoint is on and the first four bytes are not all in."""
        from broker.control import could_be_control, is_control_request

        head = self._sniffed + data
        if len(head) < 4 and could_be_control(head):
            self._sniffed = head
            return
        del self.data_received  # the class's method serves from now on
        self._sniffed = b""
        if len(head) >= 4 and is_control_request(head):
            self._hand_to_control(head)
        else:
            self.data_received(head)

    def _hand_to_control(self, head: bytes) -> None:
        """Give the socket to the control endpoint; this connection keeps its place in the broker (limits,
        shutdown) until the socket closes."""
        from broker.control import ControlProtocol

        transport = self._transport
        if transport is None or self._closing:
            return
        self._close_reason = "control endpoint request"
        control = ControlProtocol(self._broker.faults, self.info.peer, self.connection_lost)
        transport.set_protocol(control)
        control.connection_made(transport)
        control.data_received(head)

    # ------------------------------------------------------------ TLS

    def _start_tls(self, context: ssl.SSLContext) -> None:
        """Put a TLS session between the socket and the Kafka protocol: received bytes are decrypted
        before framing (an instance attribute shadows data_received) and responses encrypted."""
        from broker.security.tls import TlsSession

        try:
            self._tls = TlsSession(context)
        except OSError as exc:  # ssl.SSLError; ssl itself is imported only by TLS listeners
            log.error("tls.session_failed", peer=self.info.peer, listener=self.info.listener, reason=str(exc))
            self.close("TLS session could not be made")
            return
        self.data_received = self._tls_data_received  # type: ignore[method-assign]
        self._send = self._send_tls

    def _tls_data_received(self, data: bytes) -> None:
        tls = self._tls
        assert tls is not None
        if self._closing:
            return
        handshaking = not tls.handshake_done
        try:
            plaintext = tls.receive(data)
        except OSError as exc:  # ssl.SSLError: a failed handshake or a corrupt record
            self._tls_failed(exc, handshaking)
            return
        output = tls.take_output()
        if output and self._transport is not None:
            self._transport.write(output)
        if handshaking and tls.handshake_done:
            self._tls_established(tls)
        if plaintext:
            Connection.data_received(self, plaintext)
        if tls.peer_closed:
            self.close("peer closed TLS")

    def _tls_failed(self, exc: OSError, handshaking: bool) -> None:
        from broker.security.tls import failure_reason

        tls = self._tls
        if tls is not None and self._transport is not None:
            alert = tls.take_output()  # tell the client why, if OpenSSL made an alert
            if alert:
                self._transport.write(alert)
        event = "tls.handshake_failed" if handshaking else "tls.record_failed"
        self._throttle.warning(event, self.host, peer=self.info.peer, listener=self.info.listener,
                               reason=failure_reason(exc))
        self.close("TLS handshake failed" if handshaking else "TLS error")

    def _tls_established(self, tls: TlsSession) -> None:
        cert = tls.peer_certificate()
        if cert is not None:
            from broker.security.principal import distinguished_name

            dn = distinguished_name(cert)
            name = self._listener.principal_mapper.map(dn)
            if name is None:
                self._throttle.warning("tls.principal_unmapped", self.host, peer=self.info.peer,
                                       listener=self.info.listener, subject=dn,
                                       reason="no ssl.principal.mapping.rules entry matches the subject")
                self.close("no principal mapping rule matches the client certificate")
                return
            self.info.principal = f"User:{name}"
        log.debug("tls.established", peer=self.info.peer, listener=self.info.listener, version=tls.version,
                  cipher=tls.cipher, principal=self.info.principal)

    def _send_plain(self, parts: list[Any]) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return  # the peer is gone (connection_lost is on its way): asyncio logs writes after that
        self._transport.writelines(parts)

    def _send_tls(self, parts: list[Any]) -> None:
        assert self._transport is not None and self._tls is not None
        if self._transport.is_closing():
            return
        self._transport.write(self._tls.encrypt(parts))

    def pause_writing(self) -> None:
        self._writing_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._pump()

    # ------------------------------------------------------------ public

    def close(self, reason: str) -> None:
        """Close the connection, dropping requests still in flight (their responses are never sent)."""
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        self._cancel_pending()
        if self._transport is not None:
            if self._tls is not None:
                goodbye = self._tls.close_notify()
                if goodbye:
                    self._transport.write(goodbye)
            self._transport.close()

    def abort(self) -> None:
        """Close at once, discarding unsent output (a broker stop that cannot wait for a slow reader)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def mute(self, throttle_ms: int) -> None:
        """Stop reading this client's requests for ``throttle_ms`` (KIP-219: a client over its quota gets
        its answer at once, with ``throttle_time_ms``, and the broker mutes the connection meanwhile)."""
        if throttle_ms <= 0 or self._closing or self._muted:
            return
        self._muted = True
        self.update_reading()
        self._loop.call_later(throttle_ms / 1000, self._unmute)

    def _unmute(self) -> None:
        self._muted = False
        self.update_reading()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def queued_bytes(self) -> int:
        """Request bytes this connection holds: frames queued or in flight, and the one arriving."""
        return self._queued_bytes

    def update_reading(self) -> None:
        """Pause or resume reading from the socket to match the limits (also called by the broker's
        request memory when it frees bytes)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        self._charge_partial()
        # A connection receiving an admitted frame with nothing else queued may always finish it: its
        # bytes are already charged, and finishing is how they get freed.
        finishing = self._partial_admitted and not self._pending and not self._backlog
        memory_short = not finishing and self._memory.exhausted
        should_pause = (self._throttled or self._muted or self._writing_paused or bool(self._backlog)
                        or len(self._pending) >= self._max_in_flight or memory_short
                        or (not finishing and self._queued_bytes >= self._max_bytes))
        if memory_short:
            self._memory.wait(self)
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # ------------------------------------------------------------ dispatch

    def _pump(self) -> None:
        """Dispatch queued frames while under the in-flight limit and write finished responses."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._flush()
            dispatched = 0
            while self._backlog and not self._closing and not self._writing_paused \
                    and len(self._pending) < self._max_in_flight and not self._authenticating():
                if dispatched >= PUMP_TURN_BYTES:
                    # Other connections get their turn before this one decodes more: a client that
                    # pipelines large requests cannot hold the event loop for all of them at once.
                    self._loop.call_soon(self._pump)
                    break
                frame = self._backlog[0]
                if type(frame) is GatheredFrame:
                    self._assemble(frame)
                    break
                self._backlog.popleft()
                dispatched += len(frame)
                self._dispatch(frame)
                self._flush()
        except Exception:
            # A bug in dispatch must cost this connection only.
            log.exception("connection.internal_error", peer=self.info.peer)
            self.close("internal error")
        finally:
            self._pumping = False
        self.update_reading()

    def _assemble(self, frame: GatheredFrame) -> None:
        """Have the large frame at the backlog's head copied together on a worker thread (the copy runs
        without the interpreter lock); nothing after it is dispatched until it is done."""
        if self._assembling:
            return
        self._assembling = True
        self._assembly_charge = len(frame)
        self._charge(self._assembly_charge)
        future = self._loop.run_in_executor(None, frame.assemble)
        future.add_done_callback(lambda done: self._assembled(frame, done))

    def _assembled(self, frame: GatheredFrame, future: asyncio.Future[bytearray]) -> None:
        self._assembling = False
        self._charge(-self._assembly_charge)
        self._assembly_charge = 0
        if future.cancelled():
            return
        exc = future.exception()
        if self._closing or not self._backlog or self._backlog[0] is not frame:
            return
        if exc is not None:
            log.error("request.assembly_failed", peer=self.info.peer, size=len(frame),
                      error=f"{type(exc).__name__}: {exc}")
            self.close("request could not be assembled")
            return
        self._backlog[0] = future.result()
        self._pump()

    def _authenticating(self) -> bool:
        """A SASL exchange is under way with a request of it unanswered: the next frame waits, since what it
        may be depends on the answer (as Kafka's authenticator reads one frame at a time)."""
        sasl = self.info.sasl
        return sasl is not None and bool(self._pending) and not sasl.established

    def _dispatch(self, frame: bytes) -> None:
        sasl = self.info.sasl
        if sasl is not None and sasl.expects_raw_token:
            self._raw_sasl_token(frame)
            return
        peer = self.info.peer
        warn = self._throttle.warning
        # Charged when it arrived; its slot gives it back when answered (a bad frame closes the
        # connection, which gives back everything).
        charge = len(frame) + REQUEST_OVERHEAD_BYTES
        try:
            header, offset = codec.decode_request_header(frame)
        except codec.DecodeError as exc:
            warn("request.malformed_header", self.host, peer=peer, api_key=exc.api_key,
                 api_version=exc.api_version, correlation_id=exc.correlation_id, size=len(frame), reason=str(exc))
            self.close("malformed request header")
            return
        api_key = header.request_api_key
        version = header.request_api_version
        corr = header.correlation_id
        sasl = self.info.sasl
        if sasl is not None:
            refused = sasl.refusal(api_key)
            if refused is not None:
                # Kafka closes a SASL connection that sends anything else before authenticating (or after
                # its session expired): the client is misconfigured or hostile, and no answer helps.
                warn("request.unauthenticated", self.host, peer=peer, api_key=api_key,
                     api_name=codec.api_name(api_key), api_version=version, correlation_id=corr,
                     client_id=header.client_id, listener=self.info.listener, reason=refused)
                self.close(refused)
                return
        entry = self._broker.registry.lookup(api_key)
        if entry is None:
            warn("request.unknown_api_key", self.host, peer=peer, api_key=api_key, api_version=version,
                 correlation_id=corr, client_id=header.client_id, api_name=codec.api_name(api_key))
            self.close(f"unknown api key {api_key}")
            return
        if not entry.supports(version):
            if api_key == API_VERSIONS:
                # KIP-511: answer in v0 format so any client can read the error and our ranges.
                from broker.handlers.api_versions import unsupported_version_response

                log.debug("request.api_versions_unsupported_version", peer=peer, api_version=version,
                          correlation_id=corr, client_id=header.client_id)
                slot = self._new_slot(api_key, 0, corr, charge)
                slot.done = True
                slot.response = unsupported_version_response(self._broker.registry)
                return
            warn("request.unsupported_version", self.host, peer=peer, api_key=api_key,
                 api_name=codec.api_name(api_key), api_version=version, correlation_id=corr,
                 client_id=header.client_id, min_version=entry.min_version, max_version=entry.max_version)
            self.close(f"unsupported version {version} of api key {api_key}")
            return
        try:
            body = codec.decode_request_body(api_key, version, frame, offset, corr)
        except codec.DecodeError as exc:
            warn("request.malformed_body", self.host, peer=peer, api_key=api_key,
                 api_name=codec.api_name(api_key), api_version=version, correlation_id=corr,
                 client_id=header.client_id, size=len(frame), reason=str(exc))
            self.close("malformed request body")
            return

        slot = self._new_slot(api_key, version, corr, charge, body)
        delay_s = 0.0
        if self._broker.faults.active:
            fault = self._broker.faults.on_request(api_key, header.client_id, body, self, self._topic_name)
            if fault is not None:
                self._log_fault(slot, fault, header.client_id)
                if fault.kind != DELAY:
                    self._apply_fault(slot, fault)
                    return
                delay_s = fault.delay_s
        membership = self._broker.membership
        if membership is not None and membership.shared:
            refused = membership.refusal(api_key, body)
            if refused is not None:
                # A coordinator API on a broker of a shared cluster that is not the coordinator: answered
                # NOT_COORDINATOR (list APIs: empty), in the API's own shape, without its handler.
                slot.done = True
                slot.response = error_response(api_key, version, body, int(refused))
                return
        ctx = RequestContext(self._broker, self.info, version)
        quotas = self._broker.client_quotas_if_any
        timed = quotas is not None and quotas.active and api_key not in _UNMETERED_APIS
        started = time.perf_counter() if timed else 0.0
        try:
            result = entry.handler(header, body, ctx)
        except Exception as exc:  # noqa: BLE001 - logged with traceback; a handler bug costs only this connection
            self._handler_failed(slot, exc)
            return
        if timed:
            # request_percentage: the event-loop time this request takes, every step of its handler.
            meter = _RequestTime(time.perf_counter() - started, header.client_id)
            slot.meter = meter
            if inspect.isawaitable(result):
                result = meter.wrap(result)
        if delay_s:
            result = _delayed(result, delay_s)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            slot.task = task
            task.add_done_callback(lambda t, s=slot: self._handler_done(s, t))
        else:
            slot.done = True
            slot.response = result
            if timed:
                self._charge_request_time(slot)

    def _raw_sasl_token(self, frame: bytes) -> None:
        """A SASL token sent without Kafka framing, after a v0 SaslHandshake: answered the same way, and a
        failure closes the connection (there is no response to carry an error)."""
        slot = self._new_slot(-1, 0, 0, len(frame) + REQUEST_OVERHEAD_BYTES)
        task = asyncio.ensure_future(self.info.sasl.raw_token(bytes(frame)))
        slot.task = task
        task.add_done_callback(lambda t, s=slot: self._handler_done(s, t))

    # ------------------------------------------------------------ fault injection

    def _topic_name(self, topic_id: Any) -> str | None:
        topic = self._broker.cluster.get_by_id(topic_id)
        return topic.name if topic is not None else None

    def _log_fault(self, slot: _Slot, fault: RequestFault, client_id: str | None) -> None:
        self._throttle.log("info", "fault.injected", self.host, similar=str(fault.rule_id), peer=self.info.peer,
                           rule=fault.rule_id, kind=fault.kind, api_key=slot.api_key,
                           api_name=codec.api_name(slot.api_key), api_version=slot.api_version,
                           correlation_id=slot.correlation_id, client_id=client_id,
                           error=ErrorCode.from_code(fault.error).name if fault.error else None)

    def _apply_fault(self, slot: _Slot, fault: RequestFault) -> None:
        """Answer the slot's request as the fault rule says, without its handler."""
        if fault.kind == FAIL:
            try:
                response = error_response(slot.api_key, slot.api_version, slot.request, fault.error)
            except Exception:  # a request the builder cannot mirror: close rather than stall the FIFO
                log.exception("response.error_response_failed", peer=self.info.peer, api_key=slot.api_key,
                              api_version=slot.api_version)
                response = None
            slot.done = True
            # An acks=0 Produce has no response to carry the error: Kafka closes the connection instead.
            slot.response = response if response is not None else CloseConnection(
                f"fault rule {fault.rule_id}: a request without a response cannot carry its error")
        elif fault.kind == CLOSE:
            # At the head of the FIFO, so the responses to earlier requests still go out first.
            slot.done = True
            slot.response = CloseConnection(f"fault rule {fault.rule_id}: close the connection")
        # DROP: the slot stays pending, unanswered; later responses wait behind it until the client
        # times out and closes the connection, which releases the slot and its bytes.

    def _new_slot(self, api_key: int, version: int, corr: int, charge: int, body: Any = None) -> _Slot:
        slot = _Slot(api_key, version, corr, charge, body)
        self._pending.append(slot)
        return slot

    def _charge_partial(self) -> None:
        """Charge the frame being received: by its announced size once admitted (as Kafka's memory pool
        takes the whole frame when its size is read), which happens when its size prefix is in and the
        broker's budget is not spent; until then by the bytes actually buffered."""
        decoder = self._decoder
        if not self._partial_admitted:
            announced = decoder.pending_frame_size
            if announced is not None and not self._memory.exhausted:
                self._partial_admitted = True
        if self._partial_admitted:
            partial = decoder.pending_frame_size or 0
        else:
            partial = decoder.buffered_bytes
        self._charge(partial - self._partial_charge)
        self._partial_charge = partial

    def _charge(self, delta: int) -> None:
        if delta:
            self._queued_bytes += delta
            self._memory.charge(delta)

    def _handler_done(self, slot: _Slot, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            if not self._closing:
                # Only closing cancels handlers: this one let a CancelledError out of something it awaited
                # (a bug). Answered with an error, or the client and every answer behind it would wait forever.
                self._handler_failed(slot, asyncio.CancelledError(f"{codec.api_name(slot.api_key)} handler cancelled"))
            return
        # Retrieved even when closing: an exception never retrieved is logged by asyncio as an error.
        exc = task.exception()
        if self._closing:
            return
        if exc is not None:
            self._handler_failed(slot, exc)
            return
        slot.done = True
        slot.response = task.result()
        if slot.meter is not None:
            self._charge_request_time(slot)
        self._pump()

    def _charge_request_time(self, slot: _Slot) -> None:
        """Account the request's handling time to the client's request_percentage quota; over it, the
        response says how long to back off and the connection is muted that long (KIP-219)."""
        from broker.quotas import REQUEST_PERCENTAGE

        meter = slot.meter
        if meter is None:
            return
        ctx = RequestContext(self._broker, self.info, slot.api_version)
        throttle_ms = ctx.quota_throttle_ms(REQUEST_PERCENTAGE, meter.elapsed_s * 1000, meter.client_id)
        response = slot.response
        if throttle_ms > 0 and hasattr(response, "throttle_time_ms"):
            response.throttle_time_ms = max(response.throttle_time_ms, throttle_ms)

    def _handler_failed(self, slot: _Slot, exc: BaseException | None) -> None:
        if isinstance(exc, CloseConnection):
            self._throttle.warning("request.closing_connection", self.host,
                                   similar=f"{slot.api_key}v{slot.api_version}", peer=self.info.peer,
                                   api_key=slot.api_key, api_name=codec.api_name(slot.api_key),
                                   api_version=slot.api_version, correlation_id=slot.correlation_id,
                                   reason=str(exc))
            # The close happens when this slot reaches the head: earlier responses still go out first.
            slot.done = True
            slot.response = exc
            self._pump()
            return
        self._throttle.error("handler.failed", self.host, similar=f"{slot.api_key}v{slot.api_version}",
                             peer=self.info.peer, api_key=slot.api_key,
                             api_name=codec.api_name(slot.api_key), api_version=slot.api_version,
                             correlation_id=slot.correlation_id, exc_info=exc if exc is not None else True)
        self._answer_with_error(slot)
        self._pump()

    def _answer_with_error(self, slot: _Slot) -> None:
        """Answer the slot's request with UNKNOWN_SERVER_ERROR in its API's response shape, as Kafka does;
        a request without a response (acks=0 Produce) closes the connection instead."""
        try:
            response = error_response(slot.api_key, slot.api_version, slot.request,
                                      int(ErrorCode.UNKNOWN_SERVER_ERROR))
        except Exception:  # a request the builder cannot mirror still must not stall the FIFO
            log.exception("response.error_response_failed", peer=self.info.peer, api_key=slot.api_key,
                          api_version=slot.api_version)
            response = None
        slot.done = True
        slot.response = response if response is not None else CloseConnection("no response to report the error")

    def _flush(self) -> None:
        """Write the responses at the head of the FIFO that are ready, in order."""
        pending = self._pending
        wrote = False
        while pending and pending[0].done and not self._closing:
            slot = pending[0]
            response = slot.response
            if isinstance(response, CloseConnection):
                self.close(str(response))
                return
            then_close = None
            if isinstance(response, ThenClose):
                then_close = response.reason
                slot.response = response = response.response
            if isinstance(response, RawFrame):
                self._send([response.frame()])
                wrote = True
            elif response is not None:
                parts = self._encode(slot)
                if parts is None:
                    return
                self._send(parts)
                wrote = True
            pending.popleft()
            self._charge(-slot.charge)
            if then_close is not None:
                self.close(then_close)
                return
        if wrote:
            self._last_active = self._loop.time()

    def _encode(self, slot: _Slot) -> list[Any] | None:
        """The slot's response frame; a response the codec refuses (a handler bug) is replaced by the
        error response. None when the connection had to be closed instead."""
        try:
            return codec.encode_response(slot.api_key, slot.api_version, slot.correlation_id, slot.response)
        except Exception as exc:  # noqa: BLE001 - logged with traceback, answered with the error shape
            self._throttle.error("response.encode_failed", self.host, peer=self.info.peer, api_key=slot.api_key,
                                 api_name=codec.api_name(slot.api_key), api_version=slot.api_version,
                                 correlation_id=slot.correlation_id, exc_info=exc)
        self._answer_with_error(slot)
        if not isinstance(slot.response, CloseConnection):
            try:
                return codec.encode_response(slot.api_key, slot.api_version, slot.correlation_id, slot.response)
            except Exception:
                log.exception("response.error_response_failed", peer=self.info.peer, api_key=slot.api_key,
                              api_version=slot.api_version)
        self.close("response encoding failed")
        return None

    def _end_creation_throttle(self) -> None:
        self._throttled = False
        self.update_reading()

    def _cancel_pending(self) -> None:
        for slot in self._pending:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        self._pending.clear()
        self._backlog.clear()
        self._assembly_charge = 0  # part of _queued_bytes, given back below
        self._partial_charge = 0
        self._partial_admitted = False
        self._memory.forget(self)
        self._charge(-self._queued_bytes)

    # ------------------------------------------------------------ idle timeout

    def _arm_idle_timer(self) -> None:
        if self._idle_s is not None:
            self._idle_timer = self._loop.call_at(self._last_active + self._idle_s, self._check_idle)

    def _check_idle(self) -> None:
        if self._closing:
            return
        now = self._loop.time()
        if self._pending:
            # A request still being handled (a long-poll Fetch, say) is activity, not idleness.
            self._last_active = now
        if now - self._last_active >= self._idle_s:  # type: ignore[operator]
            log.info("connection.idle_timeout", peer=self.info.peer,
                     idle_ms=self._broker.config.connections_max_idle_ms)
            self.close("idle timeout")
            return
        self._arm_idle_timer()


async def _delayed(result: Any, delay_s: float) -> Any:
    """A handler's result, given ``delay_s`` after it is ready (a fault rule's delay; a loop timer)."""
    if inspect.isawaitable(result):
        result = await result
    await asyncio.sleep(delay_s)
    return result
