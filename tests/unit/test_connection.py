"""Connection behaviour of the in-process broker with scripted handlers: responses in request order,
no response for handlers that return None, a failing handler costing only its own connection, the
``queued.max.requests`` bound on in-flight requests, idle timeouts, and long requests that never
hold up other connections."""

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

METADATA = 3


def request(corr: int, command: str) -> bytes:
    body = m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=command)])
    return b"".join(bytes(p) for p in codec.encode_request(METADATA, 1, corr, "test", body))


def echo(name: str) -> Any:
    return m.MetadataResponse(topics=[m.MetadataResponse.MetadataResponseTopic(name=name)])


class Script:
    """A Metadata handler driven by the topic name: 'sleep:S:tag', 'block:tag', 'none', 'fail', else echo."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def handle(self, header: Any, body: Any, ctx: Any) -> Any:
        command = body.topics[0].name
        self.calls.append(command)
        if command.startswith("sleep:"):
            await asyncio.sleep(float(command.split(":")[1]))
        elif command.startswith("block:"):
            await self.release.wait()
        elif command == "none":
            return None
        elif command == "fail":
            raise RuntimeError("scripted handler failure")
        elif command == "close":
            raise CloseConnection("scripted close")
        return echo(command)


async def with_broker(script: Script, test: Callable[[Broker], Awaitable[None]], **settings: Any) -> None:
    registry = HandlerRegistry()
    registry.register(METADATA, 0, 12, script.handle)
    broker = Broker(BrokerConfig.from_settings({"storage.url": "memory://", "listeners": "127.0.0.1:0",
                                                **settings}), registry=registry)
    await broker.start()
    try:
        await asyncio.wait_for(test(broker), 20)
    finally:
        await broker.stop()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str]:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    frame = await reader.readexactly(size)
    header, body = codec.decode_response(METADATA, 1, frame)
    return header.correlation_id, body.topics[0].name


async def connect(broker: Broker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = broker.bound_address
    return await asyncio.open_connection(host, port)


def test_responses_follow_request_order_when_handlers_finish_out_of_order() -> None:
    """Kafka clients match responses to requests by order: a slow first request holds back faster ones."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "sleep:0.3:a") + request(2, "sleep:0.1:b") + request(3, "c"))
        got = [await read_response(reader) for _ in range(3)]
        assert got == [(1, "sleep:0.3:a"), (2, "sleep:0.1:b"), (3, "c")]
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_handler_returning_none_sends_nothing_and_keeps_the_order() -> None:
    """acks=0 Produce gets no response; the responses after it still come in order."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "a") + request(2, "none") + request(3, "sleep:0.05:c"))
        assert [await read_response(reader) for _ in range(2)] == [(1, "a"), (3, "sleep:0.05:c")]
        writer.close()

    asyncio.run(with_broker(script, test))


def test_a_failing_handler_closes_only_its_connection() -> None:
    """A handler bug is logged and closes that connection; the broker keeps serving the others."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "fail"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        reader2, writer2 = await connect(broker)
        writer2.write(request(2, "still-here"))
        assert await read_response(reader2) == (2, "still-here")
        writer2.close()

    asyncio.run(with_broker(script, test))


def test_a_handler_can_close_the_connection_after_earlier_responses() -> None:
    """Kafka answers some requests (a failed acks=0 Produce) by closing the connection; the responses to
    earlier requests on it are still delivered first, and nothing after it is processed."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(request(1, "sleep:0.2:first") + request(2, "close") + request(3, "after"))
        assert await read_response(reader) == (1, "sleep:0.2:first")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert "after" not in script.calls or script.calls.index("after") > script.calls.index("close")

    asyncio.run(with_broker(script, test))


def test_queued_max_requests_bounds_requests_in_flight() -> None:
    """With queued.max.requests=2 the broker stops reading after two unfinished requests (backpressure)
    and resumes when they complete; every request is still answered, in order."""
    script = Script()

    async def test(broker: Broker) -> None:
        reader, writer = await connect(broker)
        writer.write(b"".join(request(i, f"block:{i}") for i in range(10)))
        await writer.drain()
        await asyncio.sleep(0.3)
        assert len(script.calls) == 2, f"expected 2 handlers in flight, saw {script.calls}"
        script.release.set()
        got = [await read_response(reader) for _ in range(10)]
        assert got == [(i, f"block:{i}") for i in range(10)]
        writer.close()

    asyncio.run(with_broker(script, test, **{"queued.max.requests": 2}))


def test_idle_connections_are_closed_but_busy_ones_are_not() -> None:
    """connections.max.idle.ms closes a silent connection; one with a request in progress stays open."""
    script = Script()

    async def test(broker: Broker) -> None:
        idle_reader, _ = await connect(broker)
        busy_reader, busy_writer = await connect(broker)
        busy_writer.write(request(1, "sleep:0.8:busy"))
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        assert 0.25 <= loop.time() - start < 3
        assert await read_response(busy_reader) == (1, "sleep:0.8:busy")

    asyncio.run(with_broker(script, test, **{"connections.max.idle.ms": 300}))


def test_a_long_request_does_not_delay_other_connections() -> None:
    """A long-poll request on one connection never holds up requests on another."""
    script = Script()

    async def test(broker: Broker) -> None:
        slow_reader, slow_writer = await connect(broker)
        slow_writer.write(request(1, "block:slow"))
        reader, writer = await connect(broker)
        loop = asyncio.get_running_loop()
        start = loop.time()
        writer.write(request(2, "quick"))
        assert await read_response(reader) == (2, "quick")
        assert loop.time() - start < 1.0
        script.release.set()
        assert await read_response(slow_reader) == (1, "block:slow")

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
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        _, body = codec.decode_response(api_key, 3, await reader.readexactly(size))
        assert sorted((k.api_key, k.min_version, k.max_version) for k in body.api_keys) == [
            (METADATA, 0, 12), (api_key, 0, 4)]
        writer.close()

    asyncio.run(with_broker(script, test))
