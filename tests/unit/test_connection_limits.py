"""Connection limits and bounded request memory over raw sockets (Kafka's max.connections,
max.connections.per.ip with overrides, max.connection.creation.rate, and queued.max.request.bytes with
its per-connection bound), plus the pure rules of broker/connection_limits.py."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from broker.config import BrokerConfig, ConfigError
from broker.connection_limits import (
    REQUEST_OVERHEAD_BYTES,
    ConnectionLimits,
    RequestMemory,
    parse_ip_overrides,
)
from broker.server import Broker
from tests.unit.test_connection import (
    Script,
    connect,
    eventually,
    is_closed,
    read_response,
    request,
    served,
    with_broker,
)

ASYNCIO_READ_CHUNK = 256 * 1024  # the most one data_received call hands over (asyncio's read size)


async def open_served(broker: Broker, count: int) -> list[Any]:
    """``count`` connections, each proven served by a round trip."""
    opened = []
    for i in range(count):
        reader, writer = await connect(broker)
        writer.write(request(i, f"hello-{i}"))
        assert await read_response(reader) == (i, f"hello-{i}")
        opened.append((reader, writer))
    return opened


def test_the_connection_over_max_connections_is_closed_and_a_freed_slot_is_reused() -> None:
    script = Script()

    async def test(broker: Broker) -> None:
        opened = await open_served(broker, 2)
        reader, _ = await connect(broker)
        assert await is_closed(reader), "third connection should be closed with max.connections=2"
        opened[0][1].close()
        await eventually(lambda: broker.connection_count == 1, "first connection released")
        assert await served(broker)

    asyncio.run(with_broker(script, test, **{"max.connections": 2}))


def test_max_connections_per_ip_closes_the_excess_connection() -> None:
    script = Script()

    async def test(broker: Broker) -> None:
        await open_served(broker, 1)
        reader, _ = await connect(broker)
        assert await is_closed(reader)

    asyncio.run(with_broker(script, test, **{"max.connections.per.ip": 1}))


def test_max_connections_per_ip_override_is_honoured() -> None:
    """max.connections.per.ip=1 with 127.0.0.1:3 in the overrides: three connections, the fourth closed."""
    script = Script()

    async def test(broker: Broker) -> None:
        await open_served(broker, 3)
        reader, _ = await connect(broker)
        assert await is_closed(reader)

    asyncio.run(with_broker(script, test, **{"max.connections.per.ip": 1,
                                             "max.connections.per.ip.overrides": "127.0.0.1:3"}))


def test_connections_over_the_creation_rate_are_throttled_not_refused() -> None:
    script = Script()

    async def test(broker: Broker) -> None:
        await open_served(broker, 4)

    asyncio.run(with_broker(script, test, **{"max.connection.creation.rate": 20}))


def test_a_pipelined_flood_is_bounded_per_connection_while_others_are_answered() -> None:
    """A client pipelining 32 MiB of requests that never finish: the broker holds at most the
    per-connection byte bound (plus what one socket read brings), and another client is still served."""
    script = Script()
    bound = 64 * 1024

    async def test(broker: Broker) -> None:
        _, writer = await connect(broker)
        one = request(0, "block:" + "x" * 2000)
        writer.write(one * (32 * 1024 * 1024 // len(one)))  # buffered client-side, not drained
        await eventually(lambda: script.calls, "flood started")
        [flooder] = list(broker.connections)
        await eventually(lambda: flooder.queued_bytes >= bound, "flooder reached its bound")
        assert await served(broker, 1)
        per_frame = len(one) + REQUEST_OVERHEAD_BYTES
        slack = bound + per_frame + ASYNCIO_READ_CHUNK * per_frame // len(one)
        assert flooder.queued_bytes <= slack, f"{flooder.queued_bytes} bytes held, bound {bound}"
        assert broker.request_memory.used <= slack
        writer.transport.abort()

    asyncio.run(with_broker(script, test, **{"queued.max.request.bytes.per.connection": bound}))


def test_announced_frames_count_against_the_total_and_a_trickle_cannot_hold_more() -> None:
    """Clients announcing 40 MiB frames and trickling them: each is charged its announced size, so once
    queued.max.request.bytes is spent no further frame is read; closing them frees the budget and a
    waiting client is answered (no deadlock)."""
    script = Script()
    frame_size = 40 * 1024 * 1024
    bound = 64 * 1024 * 1024

    async def test(broker: Broker) -> None:
        trickles = []
        for _ in range(4):
            _, writer = await connect(broker)
            writer.write(struct.pack(">i", frame_size) + b"\0" * 100)
            trickles.append(writer)
        await eventually(lambda: broker.request_memory.used >= bound, "budget spent by announced frames")
        memory = broker.request_memory
        assert memory.used <= bound + frame_size, f"{memory.used} charged, bound {bound}"
        waiting_reader, waiting_writer = await connect(broker)
        waiting_writer.write(request(5, "waiting"))
        for writer in trickles:
            writer.transport.abort()
        assert await read_response(waiting_reader) == (5, "waiting")
        await eventually(lambda: memory.used == 0 or broker.connection_count == 1, "trickles released")

    asyncio.run(with_broker(script, test, **{"queued.max.request.bytes": bound}))


# ---------------------------------------------------------------- pure rules


def test_creation_delay_spaces_connections_by_the_rate() -> None:
    now = [100.0]
    limits = ConnectionLimits(BrokerConfig.from_settings({"max.connection.creation.rate": 4}), lambda: now[0])
    assert [limits.creation_delay() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] = 101.0
    assert limits.creation_delay() == 0.0


def test_admit_counts_per_ip_and_total_and_release_frees() -> None:
    limits = ConnectionLimits(BrokerConfig.from_settings({"max.connections": 3, "max.connections.per.ip": 2,
                                                         "max.connections.per.ip.overrides": "10.0.0.9:0"}),
                              lambda: 0.0)
    assert limits.admit("10.0.0.1") is None and limits.admit("10.0.0.1") is None
    assert "max.connections.per.ip=2" in str(limits.admit("10.0.0.1"))
    assert "max.connections.per.ip=0" in str(limits.admit("10.0.0.9"))
    assert limits.admit("10.0.0.2") is None
    assert "max.connections=3" in str(limits.admit("10.0.0.3"))
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.3") is None and limits.count("10.0.0.1") == 1


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:x", ":3", "no-such-host.invalid:3"])
def test_bad_ip_overrides_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="max.connections.per.ip.overrides"):
        parse_ip_overrides(text)


def test_ip_overrides_parse_addresses_and_host_names() -> None:
    assert parse_ip_overrides(" 10.0.0.1:5, [::1]:7 ") == {"10.0.0.1": 5, "::1": 7}
    assert parse_ip_overrides("localhost:4")["127.0.0.1"] == 4


def test_request_memory_wakes_waiting_users_when_bytes_are_given_back() -> None:
    woken: list[str] = []

    class User:
        def __init__(self, name: str) -> None:
            self.name = name

        def update_reading(self) -> None:
            woken.append(self.name)

    memory = RequestMemory(100)
    memory.charge(150)
    assert memory.exhausted
    a, b = User("a"), User("b")
    memory.wait(a)
    memory.wait(b)
    memory.forget(b)
    memory.charge(-20)
    assert woken == []  # still over the bound
    memory.charge(-40)
    assert woken == ["a"] and not memory.exhausted
    assert not RequestMemory(-1).exhausted


def test_frame_decoder_reports_the_announced_size_of_the_frame_being_received() -> None:
    from protocol.framing import FrameDecoder

    decoder = FrameDecoder(1000)
    assert decoder.pending_frame_size is None
    decoder.feed(b"\x00\x00")
    assert decoder.pending_frame_size is None
    decoder.feed(b"\x01\x00ab")
    assert decoder.pending_frame_size == 256
    assert decoder.feed(b"x" * 254 + b"\x00\x00\x00\x05") and decoder.pending_frame_size == 5
