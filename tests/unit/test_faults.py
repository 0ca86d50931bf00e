"""Fault injection (``broker/faults.py``, ``broker/control.py``, ``broker/fault_cli.py``) without client
libraries: rule validation, matching by scope, counting, per-connection ``after``, expiry on an injected
clock, partition rules; then the connection's side on an in-process broker over raw sockets (on a
virtual clock): an error answer in the API's shape, a delayed response that keeps the order, a close
after N requests, an unanswered request whose slot and bytes are freed when the client gives up, and
the control endpoint recognised even when its first bytes arrive one at a time."""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker import fault_cli
from broker.config import BrokerConfig
from broker.faults import FaultInjector, RequestFault, parse_api, parse_error, request_groups, request_topics
from broker.server import Broker
from protocol import codec
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.unit.virtual_clock import run_virtual

PRODUCE, FETCH, METADATA, FIND_COORDINATOR, JOIN_GROUP, OFFSET_FETCH, API_VERSIONS = 0, 1, 3, 10, 11, 9, 18
DEADLINE_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Conn:
    """Stands for a connection: identity only (weak-referenceable)."""


def injector() -> tuple[FaultInjector, Clock]:
    faults = FaultInjector()
    clock = Clock()
    faults.clock = clock
    return faults, clock


def produce_body(*topics: str) -> Any:
    return m.ProduceRequest(acks=-1, topic_data=[m.ProduceRequest.TopicProduceData(name=t) for t in topics])


def metadata_body(*topics: str) -> Any:
    return m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=t) for t in topics])


def join_body(group: str) -> Any:
    return m.JoinGroupRequest(group_id=group, member_id="", protocol_type="consumer")


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("value", "key"), [("Produce", 0), ("produce", 0), ("ListOffsets", 2), ("list_offsets", 2),
                                            ("FETCH", 1), (3, 3), ("19", 19)])
def test_apis_go_by_kafka_name_in_any_case_or_by_key(value: Any, key: int) -> None:
    assert parse_api(value) == key


@pytest.mark.parametrize(("value", "code"), [("NOT_LEADER_OR_FOLLOWER", 6), ("request_timed_out", 7), (16, 16),
                                             ("-1", -1), (ErrorCode.KAFKA_STORAGE_ERROR, 56)])
def test_errors_go_by_kafka_name_in_any_case_or_by_code(value: Any, code: int) -> None:
    assert int(parse_error(value)) == code


@pytest.mark.parametrize(("kind", "fields", "message"), [
    ("explode", {}, "unknown fault kind 'explode'"),
    ("fail", {"api": "Produce"}, "'fail' rules need error"),
    ("fail", {"api": "Produce", "error": "NONE"}, "error NONE is not a fault"),
    ("fail", {"api": "Produce", "error": "NOT_A_THING"}, "unknown Kafka error 'NOT_A_THING'"),
    ("fail", {"api": "Producer", "error": 6}, "unknown API 'Producer'"),
    ("fail", {"api": 999, "error": 6}, "unknown API key 999"),
    ("fail", {"api": True, "error": 6}, "api must be a number or a name, got True"),
    ("fail", {"api": 0, "error": 6, "count": 0}, "count must be at least 1, got 0"),
    ("fail", {"api": 0, "error": 6, "count": "3"}, "count must be an integer, got '3'"),
    ("fail", {"api": 0, "error": 6, "delay_ms": 5}, "'fail' rules do not take delay_ms"),
    ("fail", {"api": 0, "error": 6, "partition": 1}, "'fail' rules do not take partition"),
    ("delay", {"api": 1}, "'delay' rules need delay_ms"),
    ("delay", {"api": 1, "delay_ms": 0}, "delay_ms must be at least 1"),
    ("close", {"after": -1}, "after must be at least 0, got -1"),
    ("offline", {}, "'offline' rules need topic"),
    ("offline", {"topic": "t", "api": 0}, "'offline' rules do not take api"),
    ("disk", {"topic": ""}, "topic must be a non-empty string"),
    ("coordinator", {"count": 2}, "'coordinator' rules do not take count"),
    ("drop", {"api": 0, "color": "red"}, "unknown field(s) color"),
])
def test_a_rule_that_is_not_valid_is_refused_with_what_is_wrong(kind: str, fields: dict[str, Any],
                                                                 message: str) -> None:
    faults, _ = injector()
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        faults.add(kind, **fields)
    assert faults.rules() == []
    assert faults.active is False


def test_a_rule_is_returned_and_listed_as_a_dict_with_kafka_names() -> None:
    faults, _ = injector()
    assert faults.active is False
    rule = faults.fail_requests("produce", 6, count=3, topic="orders", client_id="app")
    assert rule == {"id": 1, "kind": "fail", "api": "Produce", "topic": "orders", "partition": None,
                    "client_id": "app", "group": None, "error": "NOT_LEADER_OR_FOLLOWER", "count": 3,
                    "remaining": 3, "delay_ms": None, "after": None, "duration_ms": None,
                    "expires_in_ms": None, "hits": 0}
    assert faults.active is True
    assert faults.rules() == [rule]
    json.dumps(faults.rules())  # what the control endpoint sends


# ---------------------------------------------------------------- request rules


def test_a_counted_fail_rule_acts_that_many_times_then_goes() -> None:
    faults, _ = injector()
    rule = faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER", count=2)
    conn = Conn()
    assert faults.on_request(METADATA, "c", metadata_body("t"), conn) is None  # another API
    expected = RequestFault("fail", rule["id"], error=6)
    assert faults.on_request(PRODUCE, "c", produce_body("t"), conn) == expected
    assert faults.rules()[0]["remaining"] == 1
    assert faults.on_request(PRODUCE, "c", produce_body("t"), conn) == expected
    assert faults.on_request(PRODUCE, "c", produce_body("t"), conn) is None
    assert faults.rules() == []
    assert faults.active is False


def test_request_rules_match_only_their_scope() -> None:
    faults, _ = injector()
    faults.fail_requests(None, "REQUEST_TIMED_OUT", count=None, topic="orders", client_id="app")
    conn = Conn()
    assert faults.on_request(PRODUCE, "app", produce_body("other"), conn) is None
    assert faults.on_request(PRODUCE, "other-app", produce_body("orders"), conn) is None
    assert faults.on_request(PRODUCE, "app", produce_body("other", "orders"), conn) is not None
    assert faults.on_request(METADATA, "app", metadata_body("orders"), conn) is not None


def test_a_topic_named_by_id_matches_through_the_brokers_lookup() -> None:
    faults, _ = injector()
    faults.drop_requests("Fetch", topic="orders")
    topic_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    body = m.FetchRequest(topics=[m.FetchRequest.FetchTopic(topic_id=topic_id)])
    names = {topic_id: "orders"}
    assert faults.on_request(FETCH, "c", body, Conn(), lambda i: None) is None
    assert faults.on_request(FETCH, "c", body, Conn(), names.get) == RequestFault("drop", 1)


def test_the_groups_and_topics_a_request_names() -> None:
    find_group = m.FindCoordinatorRequest(key="g1", key_type=0)
    find_txn = m.FindCoordinatorRequest(key="tx", key_type=1)
    batched = m.FindCoordinatorRequest(key_type=0, coordinator_keys=["g1", "g2"])
    offsets_v8 = m.OffsetFetchRequest(groups=[m.OffsetFetchRequest.OffsetFetchRequestGroup(
        group_id="g3", topics=[m.OffsetFetchRequest.OffsetFetchRequestTopics(name="t3")])])
    assert list(request_groups(FIND_COORDINATOR, find_group)) == ["g1"]
    assert list(request_groups(FIND_COORDINATOR, find_txn)) == []
    assert list(request_groups(FIND_COORDINATOR, batched)) == ["g1", "g2"]
    assert list(request_groups(OFFSET_FETCH, offsets_v8)) == ["g3"]
    assert list(request_groups(15, m.DescribeGroupsRequest(groups=["a", "b"]))) == ["a", "b"]
    assert list(request_groups(42, m.DeleteGroupsRequest(groups_names=["c"]))) == ["c"]
    assert list(request_topics(offsets_v8)) == ["t3"]
    assert list(request_topics(produce_body("x", "y"))) == ["x", "y"]


def test_the_first_matching_rule_decides() -> None:
    faults, _ = injector()
    faults.delay_responses("Produce", 250)
    faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER", count=None)
    assert faults.on_request(PRODUCE, "c", produce_body("t"), Conn()) == RequestFault("delay", 1, delay_s=0.25)
    faults.clear(1)
    assert faults.on_request(PRODUCE, "c", produce_body("t"), Conn()) == RequestFault("fail", 2, error=6)


def test_a_close_rule_counts_requests_per_connection() -> None:
    faults, _ = injector()
    faults.close_connections(after=2, count=2, api="Metadata")
    first, second = Conn(), Conn()
    body = metadata_body("t")
    assert [faults.on_request(METADATA, "c", body, first) for _ in range(2)] == [None, None]
    assert faults.on_request(METADATA, "c", body, second) is None  # its own count: 1 of 2
    assert faults.on_request(METADATA, "c", body, first) == RequestFault("close", 1)
    assert faults.on_request(METADATA, "c", body, second) is None
    assert faults.on_request(METADATA, "c", body, second) == RequestFault("close", 1)
    assert faults.rules() == []  # two connections closed: used up


def test_a_rule_with_a_duration_expires_on_the_injected_clock() -> None:
    faults, clock = injector()
    faults.drop_requests("Produce", count=None, duration_ms=1500)
    assert faults.rules()[0]["expires_in_ms"] == 1500
    clock.now += 1.499
    assert faults.on_request(PRODUCE, "c", produce_body("t"), Conn()) == RequestFault("drop", 1)
    clock.now += 0.001
    assert faults.on_request(PRODUCE, "c", produce_body("t"), Conn()) is None
    assert faults.rules() == []
    assert faults.active is False


def test_a_moved_coordinator_refuses_group_requests_and_recovers_when_the_rule_ends() -> None:
    faults, clock = injector()
    faults.move_coordinator(group="billing", duration_ms=2000)
    conn = Conn()
    assert faults.on_request(JOIN_GROUP, "c", join_body("billing"), conn) == RequestFault(
        "fail", 1, error=int(ErrorCode.NOT_COORDINATOR))
    assert faults.on_request(FIND_COORDINATOR, "c", m.FindCoordinatorRequest(key="billing"), conn) == RequestFault(
        "fail", 1, error=int(ErrorCode.COORDINATOR_NOT_AVAILABLE))
    assert faults.on_request(FIND_COORDINATOR, "c", m.FindCoordinatorRequest(key="billing", key_type=1), conn) is None
    assert faults.on_request(JOIN_GROUP, "c", join_body("other"), conn) is None
    assert faults.on_request(PRODUCE, "c", produce_body("billing"), conn) is None
    assert faults.rules()[0]["hits"] == 2
    clock.now += 2
    assert faults.on_request(JOIN_GROUP, "c", join_body("billing"), conn) is None


def test_moving_every_groups_coordinator_leaves_transactional_ids_alone() -> None:
    faults, _ = injector()
    faults.move_coordinator()
    conn = Conn()
    assert faults.on_request(FIND_COORDINATOR, "c", m.FindCoordinatorRequest(key="tx", key_type=1), conn) is None
    assert faults.on_request(FIND_COORDINATOR, "c", m.FindCoordinatorRequest(key="g"), conn) is not None
    assert faults.on_request(API_VERSIONS, "c", m.ApiVersionsRequest(), conn) is None


# ---------------------------------------------------------------- partition rules


def test_offline_and_failed_disk_partitions_answer_their_errors_until_cleared() -> None:
    faults, _ = injector()
    faults.take_partition_offline("orders", 1)
    faults.fail_disk("logs")
    assert faults.partition_error("orders", 0) is None
    assert faults.partition_error("orders", 1) is ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert faults.partition_offline("orders", 1) and not faults.partition_offline("orders", 0)
    assert faults.partition_error("logs", 7) is ErrorCode.KAFKA_STORAGE_ERROR
    assert not faults.partition_offline("logs", 7)  # Metadata still names the leader
    assert faults.on_request(PRODUCE, "c", produce_body("orders"), Conn()) is None  # not a request rule
    assert faults.bring_partition_online("orders", 0) == 0
    assert faults.bring_partition_online("orders", 1) == 1
    assert faults.partition_error("orders", 1) is None
    assert faults.clear(kind="disk", topic="logs") == 1
    assert faults.active is False


def test_clear_by_id_by_filter_and_all() -> None:
    faults, _ = injector()
    faults.take_partition_offline("a", 0)
    faults.take_partition_offline("b")
    faults.fail_disk("a", 0)
    faults.drop_requests("Fetch")
    assert faults.clear(99) == 0
    assert faults.clear(kind="offline", topic="a") == 1
    assert [r["id"] for r in faults.rules()] == [2, 3, 4]
    assert faults.clear(4) == 1
    assert faults.clear() == 2
    assert faults.active is False
    with pytest.raises(ValueError, match="unknown fault kind"):
        faults.clear(kind="nope")


# ---------------------------------------------------------------- the connection's side


def _frame(api_key: int, version: int, corr: int, body: Any, client_id: str = "test") -> bytes:
    return b"".join(bytes(p) for p in codec.encode_request(api_key, version, corr, client_id, body))


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), DEADLINE_S))
    return await asyncio.wait_for(reader.readexactly(size), DEADLINE_S)


async def _response(reader: asyncio.StreamReader, api_key: int, version: int) -> tuple[int, Any]:
    header, body = codec.decode_response(api_key, version, await _read_frame(reader))
    return header.correlation_id, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE_S) == b""
    except ConnectionResetError:
        return True


async def _eventually(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, f"not within {DEADLINE_S}s: {what}"
        await asyncio.sleep(0.005)


def _with_broker(test: Callable[[Broker], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        broker = Broker(BrokerConfig.from_settings({"storage.url": "memory://", "listeners": "127.0.0.1:0",
                                                    **settings}))
        broker.faults.clock = asyncio.get_running_loop().time
        await broker.start()
        try:
            await asyncio.wait_for(test(broker), 60)
        finally:
            await broker.stop()

    run_virtual(main())


async def _connect(broker: Broker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*broker.bound_address)


def test_a_failed_request_gets_the_error_in_its_apis_shape_and_the_connection_stays_usable() -> None:
    async def test(broker: Broker) -> None:
        broker.faults.fail_requests("Metadata", "NOT_LEADER_OR_FOLLOWER", count=1, client_id="victim")
        reader, writer = await _connect(broker)
        writer.write(_frame(METADATA, 9, 1, metadata_body("x"), "victim")
                     + _frame(METADATA, 9, 2, metadata_body(), "victim"))
        corr, body = await _response(reader, METADATA, 9)
        assert (corr, [(t.name, t.error_code) for t in body.topics]) == (1, [("x", 6)])
        corr, body = await _response(reader, METADATA, 9)
        assert (corr, body.topics, [b.node_id for b in body.brokers]) == (2, [], [broker.node_id])
        writer.close()

    _with_broker(test)


def test_an_acks0_produce_failed_by_a_rule_closes_the_connection() -> None:
    async def test(broker: Broker) -> None:
        broker.faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER")
        reader, writer = await _connect(broker)
        writer.write(_frame(PRODUCE, 9, 1, m.ProduceRequest(acks=0, timeout_ms=1000, topic_data=[])))
        assert await _closed(reader)

    _with_broker(test)


def test_a_delayed_response_comes_after_the_delay_and_later_responses_wait_behind_it() -> None:
    async def test(broker: Broker) -> None:
        loop = asyncio.get_running_loop()
        broker.faults.delay_responses("Metadata", 300, count=1)
        reader, writer = await _connect(broker)
        sent = loop.time()
        writer.write(_frame(METADATA, 9, 1, metadata_body()) + _frame(API_VERSIONS, 3, 2, m.ApiVersionsRequest()))
        corr, _ = await _response(reader, METADATA, 9)
        assert corr == 1 and loop.time() - sent >= 0.3
        corr, _ = await _response(reader, API_VERSIONS, 3)
        assert corr == 2
        writer.close()

    _with_broker(test)


def test_close_after_n_requests_answers_the_first_n_then_closes() -> None:
    async def test(broker: Broker) -> None:
        broker.faults.close_connections(after=1, api="Metadata")
        reader, writer = await _connect(broker)
        writer.write(_frame(METADATA, 9, 1, metadata_body()) + _frame(METADATA, 9, 2, metadata_body()))
        assert (await _response(reader, METADATA, 9))[0] == 1
        assert await _closed(reader)
        reader, writer = await _connect(broker)  # used up: served again
        writer.write(_frame(METADATA, 9, 3, metadata_body()))
        assert (await _response(reader, METADATA, 9))[0] == 3
        writer.close()

    _with_broker(test)


def test_a_dropped_request_holds_its_connection_until_the_client_closes_which_frees_everything() -> None:
    async def test(broker: Broker) -> None:
        broker.faults.drop_requests("Metadata", count=1)
        reader, writer = await _connect(broker)
        writer.write(_frame(METADATA, 9, 1, metadata_body()) + _frame(API_VERSIONS, 3, 2, m.ApiVersionsRequest()))
        await _eventually(lambda: any(c.in_flight == 2 for c in broker.connections), "both requests in flight")
        assert broker.request_memory.used > 0
        # Other connections are served meanwhile.
        other_reader, other_writer = await _connect(broker)
        other_writer.write(_frame(METADATA, 9, 7, metadata_body()))
        assert (await _response(other_reader, METADATA, 9))[0] == 7
        other_writer.close()
        with pytest.raises(TimeoutError):  # nothing answered (virtual time: the wait costs nothing)
            await asyncio.wait_for(reader.read(1), 5.0)
        writer.close()  # the client gives up, as after request.timeout.ms
        await _eventually(lambda: broker.connection_count == 0, "both connections gone")
        assert broker.request_memory.used == 0

    _with_broker(test)


def test_the_control_endpoint_is_recognised_when_its_first_bytes_arrive_one_at_a_time() -> None:
    async def test(broker: Broker) -> None:
        broker.faults.fail_disk("t")
        reader, writer = await _connect(broker)
        for byte in b"GET /faults HTTP/1.1\r\nHost: x\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        answer = await asyncio.wait_for(reader.read(), DEADLINE_S)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), answer
        assert [r["kind"] for r in json.loads(body)["rules"]] == ["disk"]
        await _eventually(lambda: broker.connection_count == 0, "the control connection released")
        # Kafka on the same port, its first bytes split too.
        reader, writer = await _connect(broker)
        frame = _frame(API_VERSIONS, 3, 5, m.ApiVersionsRequest())
        writer.write(frame[:2])
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(frame[2:])
        assert (await _response(reader, API_VERSIONS, 3))[0] == 5
        writer.close()

    _with_broker(test, **{"control.endpoint.enable": "true"})


def test_without_the_setting_an_http_request_is_refused_as_a_kafka_frame() -> None:
    async def test(broker: Broker) -> None:
        reader, writer = await _connect(broker)
        writer.write(b"GET /faults HTTP/1.1\r\n\r\n")
        assert await _closed(reader)

    _with_broker(test)


# ---------------------------------------------------------------- the command line


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moldau")
    fault_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fault", *argv])


def test_cli_options_go_before_or_after_the_action_and_shortcuts_map_to_rules() -> None:
    args = _parse("--bootstrap", "h:1", "fail", "Produce", "NOT_LEADER_OR_FOLLOWER", "--count", "all", "--json")
    assert (args.bootstrap, args.json, args.fault_action) == ("h:1", True, "fail")
    assert fault_cli.rule_from_args(args) == ("fail", {
        "api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "count": None, "delay_ms": None, "after": None,
        "topic": None, "partition": None, "client_id": None, "group": None, "duration_ms": None})
    args = _parse("fail-disk", "orders", "2", "--bootstrap", "h:2")
    assert args.bootstrap == "h:2"
    assert fault_cli.rule_from_args(args)[0] == "disk"
    assert _parse("list").bootstrap == fault_cli.DEFAULT_BOOTSTRAP


def test_cli_without_an_action_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert fault_cli.run(_parse()) == 2
    assert "move-coordinator" in capsys.readouterr().err


def test_cli_describes_rules_in_one_line_and_a_table() -> None:
    rule = {"id": 4, "kind": "delay", "api": "Fetch", "topic": None, "partition": None, "client_id": "c",
            "group": None, "delay_ms": 500, "remaining": None, "expires_in_ms": 2500, "hits": 3}
    assert fault_cli.describe(rule) == "delay [api=Fetch client_id=c] -> +500 ms, for 2.5 s"
    table = fault_cli.format_table([rule]).splitlines()
    assert table[0].split() == ["ID", "KIND", "SCOPE", "EFFECT", "LEFT", "HITS", "EXPIRES"]
    assert table[1].split() == ["4", "delay", "api=Fetch", "client_id=c", "+500", "ms", "-", "3", "in", "2.5", "s"]
