"""Connection behaviour of the in-process broker with scripted handlers, over raw sockets: responses in
request order, no response for handlers that return None, a failing handler answered with
UNKNOWN_SERVER_ERROR on a connection that stays usable, the ``queued.max.requests`` and request-bytes
bounds, connection limits, idle timeouts, and long requests that never hold up other connections.

Tests wait on conditions with a deadline (``eventually``), never on sleeps or elapsed time."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker.config import BrokerConfig
from broker.handlers import CloseConnection, HandlerRegistry
from broker.server import Broker
from protocol import codec
from protocol import messages as m
from protocol.errors import ErrorCode

METADATA = 3
PRODUCE = 0
DEADLINE_S = 10.0
UNKNOWN = int(ErrorCode.UNKNOWN_SERVER_ERROR)


def request(corr: int, command: str) -> bytes:
    body = m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=command)])
    return b"".join(bytes(p) for p in codec.encode_request(METADATA, 1, corr, "test", body))


def echo(name: str) -> Any:
    return m.MetadataResponse(topics=[m.MetadataResponse.MetadataResponseTopic(name=name)])


class Script:
    """A Metadata handler driven by the topic name: 'block:tag' (until ``release(tag)`` or
    ``release_all``), 'none', 'fail', 'cancelled', 'close', 'garbage', else echo."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._events: dict[str, asyncio.Event] = {}
        self._all = asyncio.Event()

    def _event(self, tag: str) -> asyncio.Event:
        return self._events.setdefault(tag, asyncio.Event())

    def release(self, tag: str) -> None:
        self._event(tag).set()

    def release_all(self) -> None:
        self._all.set()

    async def handle(self, header: Any, body: Any, ctx: Any) -> Any:
        command = body.topics[0].name
        self.calls.append(command)
        if command.startswith("block:"):
            one = asyncio.ensure_future(self._event(command.split(":", 1)[1]).wait())
            every = asyncio.ensure_future(self._all.wait())
            await asyncio.wait([one, every], return_when=asyncio.FIRST_COMPLETED)
            one.cancel()
            every.cancel()
        elif command == "none":
            return None
        elif command == "fail":
            raise RuntimeError("scripted handler failure")
        elif command == "cancelled":
            raise asyncio.CancelledError  # as from awaiting something another request's cancellation broke
        elif command == "close":
            raise CloseConnection("scripted close")
        elif command == "garbage":
            return m.MetadataResponse(topics=[object()])  # the codec cannot encode this
        return echo(command)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (polling the loop) until ``condition()`` holds; fail after DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {DEADLINE_S}s: {what}")
        await asyncio.sleep(0.005)


async def with_broker(script: Script, test: Callable[[Broker], Awaitable[None]], **settings: Any) -> None:
    registry = HandlerRegistry()
    registry.register(METADATA, 0, 12, script.handle)
    broker = Broker(BrokerConfig.from_settings({"storage.url": "memory://", "listeners": "127.0.0.1:0",
                                                **settings}), registry=registry)
    await broker.start()
    try:
        await asyncio.wait_for(test(broker), 30)
    finally:
        script.release_all()
        await broker.stop()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), DEADLINE_S))
    return await asyncio.wait_for(reader.readexactly(size), DEADLINE_S)


async def read_body(reader: asyncio.StreamReader) -> tuple[int, Any]:
    header, body = codec.decode_response(METADATA, 1, await read_frame(reader))
    return header.correlation_id, body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str]:
    corr, body = await read_body(reader)
    return corr, body.topics[0].name


async def is_closed(reader: asyncio.StreamReader) -> bool:
    """True when the broker closed the connection (EOF or reset) within the deadline."""
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE_S) == b""
    except ConnectionResetError:
        return True


async def connect(broker: Broker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = broker.bound_address
    return await asyncio.open_connection(host, port)


async def served(broker: Broker, corr: int = 99) -> bool:
    """A fresh connection gets an echo answered (a round trip through the broker's loop)."""
    reader, writer = await connect(broker)
    writer.write(request(corr, f"ping-{corr}"))
    try:
        return await read_response(reader) == (corr, f"ping-{corr}")
    finally:
        writer.close()


def test_responses_follow_request_order_when_handlers_finish_out_of_order() -> None:
    """Kafka clients match responses to requests by order: a slow first request holds back faster ones."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "block:a") + request(2, "block:b") + request(3, "c"))
        await eventually(lambda: len(script.calls) == 3, "all three handlers called")
        script.release("b")
        script.release("a")
        got = [await read_response(reader) for _ in range(3)]
        assert got == [(1, "block:a"), (2, "block:b"), (3, "c")]
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_handler_returning_none_sends_nothing_and_keeps_the_order() -> None:
    """acks=0 Produce gets no response; the responses after it still come in order."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "a") + request(2, "none") + request(3, "block:c"))
        await eventually(lambda: "block:c" in script.calls, "third handler called")
        script.release("c")
        assert [await read_response(reader) for _ in range(2)] == [(1, "a"), (3, "block:c")]
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_failing_handler_gets_unknown_server_error_and_the_connection_stays_usable() -> None:
    """Kafka answers a request whose handler hit a bug with UNKNOWN_SERVER_ERROR in the API's own
    response (the topic mirrored from the request) and keeps the connection."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "fail") + request(2, "after"))
        corr, body = await read_body(reader)
        assert corr == 1
        assert [(t.name, t.error_code) for t in body.topics] == [("fail", UNKNOWN)]
        assert await read_response(reader) == (2, "after")
        writer.write(request(3, "still-usable"))
        assert await read_response(reader) == (3, "still-usable")
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_handler_that_lets_a_cancellation_out_is_answered_with_unknown_server_error() -> None:
    """Only closing a connection cancels its handlers; a handler that ends cancelled otherwise (it awaited
    a shared step that another request's cancellation broke) is answered with an error, and the answers
    behind it follow: the fuzzer's probe once waited forever for such an answer."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "cancelled") + request(2, "after"))
        corr, body = await read_body(reader)
        assert (corr, body.topics[0].error_code) == (1, UNKNOWN)
        assert await read_response(reader) == (2, "after")
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_response_the_codec_cannot_encode_is_answered_with_unknown_server_error() -> None:
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "garbage") + request(2, "next"))
        corr, body = await read_body(reader)
        assert (corr, [(t.name, t.error_code) for t in body.topics]) == (1, [("garbage", UNKNOWN)])
        assert await read_response(reader) == (2, "next")
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_failing_acks_zero_produce_closes_the_connection() -> None:
    """acks=0 Produce has no response to carry the error: Kafka closes the connection."""
    script = Script()

    def boom(header: Any, body: Any, ctx: Any) -> Any:
        raise RuntimeError("scripted produce failure")

    async def test(broker: Broker) -> None:
        broker.registry.register(PRODUCE, 0, 11, boom)
        reader, writer = await connect(broker)
        frame = codec.encode_request(PRODUCE, 9, 1, "t", m.ProduceRequest(acks=0, timeout_ms=100, topic_data=[]))
        writer.write(b"".join(bytes(p) for p in frame))
        assert await is_closed(reader)
        assert await served(broker)

    asyncio.run(with_broker(script, test))


def test_a_handler_can_close_the_connection_after_earlier_responses() -> None:
    """Kafka answers some requests (a failed acks=0 Produce) by closing the connection; the responses to
    earlier requests on it are still delivered first, and nothing after it is answered."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "block:first") + request(2, "close") + request(3, "after"))
        await eventually(lambda: "close" in script.calls, "close handler called")
        script.release("first")
        assert await read_response(reader) == (1, "block:first")
        assert await is_closed(reader)

    asyncio.run(with_broker(script, test))


def test_queued_max_requests_bounds_requests_in_flight() -> None:
    """With queued.max.requests=2 the broker stops reading after two unfinished requests (backpressure)
    and resumes when they complete; every request is still answered, in order."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(b"".join(request(i, f"block:{i}") for i in range(10)))
        await writer.drain()
        await eventually(lambda: len(script.calls) >= 2, "two handlers in flight")
        assert await served(broker)  # a round trip: the broker's loop has run since
        blocked = [c for c in script.calls if c.startswith("block:")]
        assert blocked == ["block:0", "block:1"], f"expected 2 handlers in flight, saw {script.calls}"
        [conn] = [c for c in broker.connections if c.in_flight]
        assert conn.in_flight == 2
        script.release_all()
        got = [await read_response(reader) for _ in range(10)]
        assert got == [(i, f"block:{i}") for i in range(10)]
        writer.close()

    asyncio.run(with_broker(script, test, **{"queued.max.requests": 2}))


def test_idle_connections_are_closed_but_busy_ones_are_not() -> None:
    """connections.max.idle.ms closes a silent connection; one with a request in progress stays open."""
    script = Script()

    async def test(broker: Broker) -> None:
        busy_reader, busy_writer = await connect(broker)
        busy_writer.write(request(1, "block:busy"))
        await eventually(lambda: "block:busy" in script.calls, "busy request in progress")
        # Connected after the busy request arrived, so the busy connection's idle check runs first.
        idle_reader, _ = await connect(broker)
        assert await is_closed(idle_reader)
        script.release("busy")
        assert await read_response(busy_reader) == (1, "block:busy")

    asyncio.run(with_broker(script, test, **{"connections.max.idle.ms": 300}))


def test_a_long_request_does_not_delay_other_connections() -> None:
    """A long-poll request on one connection never holds up requests on another."""
    script = Script()

    async def test(broker: Broker) -> None:
        slow_reader, slow_writer = await connect(broker)
        slow_writer.write(request(1, "block:slow"))
        await eventually(lambda: "block:slow" in script.calls, "slow request in progress")
        assert await served(broker, 2)
        script.release("slow")
        assert await read_response(slow_reader) == (1, "block:slow")

    asyncio.run(with_broker(script, test))


class FakeTransport(asyncio.Transport):
    """Just enough transport for feeding a `Connection` bytes by hand, in one chosen order."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def writelines(self, data: Any) -> None:
        self.written.extend(bytes(d) for d in data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    closing = False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def big_request(corr: int, command: str) -> bytes:
    """A Metadata request over 1 MiB whose first topic name is ``command``."""
    topics = [m.MetadataRequest.MetadataRequestTopic(name=command)]
    topics += [m.MetadataRequest.MetadataRequestTopic(name="x" * 30000) for _ in range(40)]
    body = m.MetadataRequest(topics=topics)
    return b"".join(bytes(p) for p in codec.encode_request(METADATA, 1, corr, "test", body))


def test_a_connection_with_many_large_requests_queued_yields_to_other_connections() -> None:
    """Large frames that arrive together are dispatched about 1 MiB per turn of the event loop, so a
    connection that pipelines them cannot keep others waiting until all of its requests are decoded."""
    script = Script()

    async def test(broker: Broker) -> None:
        from broker.connection import Connection

        listener = broker.listeners[0]
        greedy, other = Connection(broker, listener), Connection(broker, listener)
        greedy.connection_made(FakeTransport(40001))
        other.connection_made(FakeTransport(40002))
        frames = b"".join(big_request(i, f"big-{i}") for i in range(3))
        assert len(frames) > 3 << 20
        greedy.data_received(frames)
        other.data_received(request(9, "small"))
        await eventually(lambda: len(script.calls) == 4, "all four requests handled")
        assert script.calls == ["big-0", "small", "big-1", "big-2"], script.calls
        for conn in (greedy, other):
            conn.close("test over")
            conn.connection_lost(None)

    asyncio.run(with_broker(script, test))



def test_a_large_request_arriving_in_pieces_is_answered_in_order_with_the_requests_behind_it() -> None:
    """A request over 1 MiB is gathered as it arrives and put together off the event loop; the small
    requests pipelined after it on the same connection wait for it and are answered after it, another
    connection is served meanwhile, and every byte charged to the request memory is given back."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        stream = big_request(1, "big-1") + request(2, "small-2") + big_request(3, "big-3") + request(4, "small-4")
        for pos in range(0, len(stream), 64 * 1024):
            writer.write(stream[pos : pos + 64 * 1024])
            await writer.drain()
            assert await served(broker, corr=1000 + pos // (64 * 1024))
        assert [await read_response(reader) for _ in range(4)] == [
            (1, "big-1"), (2, "small-2"), (3, "big-3"), (4, "small-4")]
        assert [c for c in script.calls if not c.startswith("ping-")] == ["big-1", "small-2", "big-3", "small-4"]
        writer.close()
        await eventually(lambda: broker.request_memory.used == 0, "the request memory to be given back")

    asyncio.run(with_broker(script, test))


def test_a_connection_closed_while_its_large_request_is_put_together_gives_back_its_memory() -> None:
    """The copy finishes on a worker thread after the connection is gone: nothing is dispatched, and the
    request memory charged for the frame and its copy returns to zero."""
    script = Script()

    async def test(broker: Broker) -> None:
        from broker.connection import Connection

        conn = Connection(broker, broker.listeners[0])
        conn.connection_made(FakeTransport(40003))
        frame = big_request(5, "big-5")
        for pos in range(0, len(frame), 256 * 1024):
            conn.data_received(frame[pos : pos + 256 * 1024])  # complete: its assembly is under way
        assert broker.request_memory.used >= 2 * len(frame)  # the frame, and its copy being made
        conn.close("test over")
        conn.connection_lost(None)
        await eventually(lambda: broker.request_memory.used == 0, "the request memory to be given back")
        assert not [c for c in script.calls if c.startswith("big-")]

    asyncio.run(with_broker(script, test))


def test_responses_finished_after_the_transport_failed_are_not_written() -> None:
    """Once a write has failed (the peer reset the connection), asyncio's transport is closing and logs a
    warning for every later write: answers that finish meanwhile are dropped quietly (a fuzz campaign saw
    86 such warnings)."""
    script = Script()

    async def test(broker: Broker) -> None:
        from broker.connection import Connection

        conn = Connection(broker, broker.listeners[0])
        transport = FakeTransport(40004)
        conn.connection_made(transport)
        conn.data_received(request(1, "block:a") + request(2, "second"))
        await eventually(lambda: len(script.calls) == 2, "both requests handled")
        transport.closing = True
        script.release("a")
        await eventually(lambda: conn.in_flight == 0, "both answers finished")
        assert transport.written == []
        conn.connection_lost(ConnectionResetError())

    asyncio.run(with_broker(script, test))


@pytest.mark.parametrize("api_key", [18])
def test_api_versions_is_computed_from_the_registry(api_key: int) -> None:
    """ApiVersions advertises exactly the registry's APIs and ranges, nothing unserved."""
    script = Script()
    from broker.handlers.api_versions import handle_api_versions

    async def test(broker: Broker) -> None:
        broker.registry.register(api_key, 0, 4, handle_api_versions)
        reader, writer = await connect(broker)
        frame = b"".join(bytes(p) for p in codec.encode_request(api_key, 3, 9, "t", m.ApiVersionsRequest(
            client_software_name="t", client_software_version="1")))
        writer.write(frame)
        _, body = codec.decode_response(api_key, 3, await read_frame(reader))
        assert sorted((k.api_key, k.min_version, k.max_version) for k in body.api_keys) == [
            (METADATA, 0, 12), (api_key, 0, 4)]
        writer.close()

    asyncio.run(with_broker(script, test))
