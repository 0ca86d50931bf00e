"""Metadata's auto-creation in-process, on a virtual clock (`tests.unit.virtual_clock`): the request waits
for the topic it creates and returns it, unless the creation queues behind a long topic mutation; then it
answers LEADER_NOT_AVAILABLE after ``AUTO_CREATE_WAIT_S``, as Kafka answers an auto-creating request, and
the creation carries on for the client's retry."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.cluster import ClusterState
from broker.config import BrokerConfig
from broker.handlers import ConnectionInfo, RequestContext
from broker.handlers.metadata import AUTO_CREATE_WAIT_S, handle_metadata
from protocol import codec, messages
from protocol.errors import ErrorCode
from tests.unit.test_cluster_state import HeldEngine
from tests.unit.test_fetch_handler import FakeBroker
from tests.unit.virtual_clock import run_virtual
from tests.waiting import wait_until_async

METADATA, VERSION = 3, 9
Req = messages.MetadataRequest


async def metadata(broker: FakeBroker, name: str) -> Any:
    info = ConnectionInfo(peer="unit", advertised=broker.advertised_address)
    ctx = RequestContext(broker, info, VERSION)  # type: ignore[arg-type]
    response = await handle_metadata(None, Req(topics=[Req.MetadataRequestTopic(name=name)],
                                               allow_auto_topic_creation=True), ctx)
    codec.encode_response(METADATA, VERSION, 1, response)  # answered in a shape the client can read
    return response.topics[0]


def test_an_auto_creation_behind_a_long_mutation_answers_leader_not_available_then_the_topic() -> None:
    async def go() -> None:
        config = BrokerConfig.from_settings({"storage.url": "memory://", "listeners": "127.0.0.1:0"})
        broker = FakeBroker(config)
        engine = HeldEngine()
        broker.cluster = ClusterState(engine, config)
        engine.opens.set()
        quick = await metadata(broker, "quick")  # nothing queued: the new topic at once
        assert quick.error_code == 0 and len(quick.partitions) == 1

        engine.opens.clear()
        long_one = asyncio.create_task(broker.cluster.create_topic("long", 3))
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = await metadata(broker, "queued")
        assert waiting.error_code == ErrorCode.LEADER_NOT_AVAILABLE and not waiting.partitions
        assert loop.time() - started == AUTO_CREATE_WAIT_S
        engine.opens.set()
        await long_one
        await wait_until_async(lambda: broker.cluster.get("queued") is not None, 10, "the queued creation")
        retried = await metadata(broker, "queued")
        assert retried.error_code == 0 and len(retried.partitions) == 1

    run_virtual(go())
