"""ErrorCode matches Apache Kafka 4.0's Errors.java: numbers, names, retriability; KafkaError carries one."""

from __future__ import annotations

import re
import struct

import pytest

from protocol import errors as errors_module
from protocol.errors import ErrorCode, KafkaError
from protocol.records import errors as record_errors

# Spot checks across the whole range, from Kafka's Errors.java (4.0).
KAFKA_CODES = [
    (-1, "UNKNOWN_SERVER_ERROR"),
    (0, "NONE"),
    (1, "OFFSET_OUT_OF_RANGE"),
    (2, "CORRUPT_MESSAGE"),
    (3, "UNKNOWN_TOPIC_OR_PARTITION"),
    (6, "NOT_LEADER_OR_FOLLOWER"),
    (7, "REQUEST_TIMED_OUT"),
    (10, "MESSAGE_TOO_LARGE"),
    (14, "COORDINATOR_LOAD_IN_PROGRESS"),
    (15, "COORDINATOR_NOT_AVAILABLE"),
    (16, "NOT_COORDINATOR"),
    (17, "INVALID_TOPIC_EXCEPTION"),
    (22, "ILLEGAL_GENERATION"),
    (25, "UNKNOWN_MEMBER_ID"),
    (27, "REBALANCE_IN_PROGRESS"),
    (29, "TOPIC_AUTHORIZATION_FAILED"),
    (35, "UNSUPPORTED_VERSION"),
    (36, "TOPIC_ALREADY_EXISTS"),
    (42, "INVALID_REQUEST"),
    (45, "OUT_OF_ORDER_SEQUENCE_NUMBER"),
    (47, "INVALID_PRODUCER_EPOCH"),
    (49, "INVALID_PRODUCER_ID_MAPPING"),
    (51, "CONCURRENT_TRANSACTIONS"),
    (56, "KAFKA_STORAGE_ERROR"),
    (58, "SASL_AUTHENTICATION_FAILED"),
    (59, "UNKNOWN_PRODUCER_ID"),
    (64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED"),
    (68, "NON_EMPTY_GROUP"),
    (69, "GROUP_ID_NOT_FOUND"),
    (70, "FETCH_SESSION_ID_NOT_FOUND"),
    (71, "INVALID_FETCH_SESSION_EPOCH"),
    (74, "FENCED_LEADER_EPOCH"),
    (76, "UNSUPPORTED_COMPRESSION_TYPE"),
    (79, "MEMBER_ID_REQUIRED"),
    (82, "FENCED_INSTANCE_ID"),
    (87, "INVALID_RECORD"),
    (89, "THROTTLING_QUOTA_EXCEEDED"),
    (90, "PRODUCER_FENCED"),
    (100, "UNKNOWN_TOPIC_ID"),
    (106, "FETCH_SESSION_TOPIC_ID_ERROR"),
    (110, "FENCED_MEMBER_EPOCH"),
    (113, "STALE_MEMBER_EPOCH"),
    (120, "TRANSACTION_ABORTABLE"),
    (122, "SHARE_SESSION_NOT_FOUND"),
    (128, "INVALID_REGULAR_EXPRESSION"),
    (129, "REBOOTSTRAP_REQUIRED"),
]

# Every code whose Kafka 4.0 exception subclasses RetriableException, directly or through
# InvalidMetadataException: the "Retriable: True" rows of Kafka's protocol error table.
KAFKA_RETRIABLE = {
    "CORRUPT_MESSAGE",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "REPLICA_NOT_AVAILABLE",
    "NETWORK_EXCEPTION",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "NOT_CONTROLLER",
    "CONCURRENT_TRANSACTIONS",
    "KAFKA_STORAGE_ERROR",
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "LISTENER_NOT_FOUND",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    "ELECTION_NOT_NEEDED",
    "UNSTABLE_OFFSET_COMMIT",
    "THROTTLING_QUOTA_EXCEEDED",
    "UNKNOWN_TOPIC_ID",
    "INCONSISTENT_TOPIC_ID",
    "FETCH_SESSION_TOPIC_ID_ERROR",
    "SHARE_SESSION_NOT_FOUND",
    "INVALID_SHARE_SESSION_EPOCH",
}


@pytest.mark.parametrize(("code", "name"), KAFKA_CODES)
def test_code_and_name_match_kafka(code: int, name: str) -> None:
    assert ErrorCode[name].value == code, f"{name}: expected code {code}, got {ErrorCode[name].value}"
    assert ErrorCode(code).name == name, f"code {code}: expected {name}, got {ErrorCode(code).name}"


def test_range_is_kafka_4_0_from_minus_one_to_rebootstrap_required() -> None:
    assert min(ErrorCode) is ErrorCode.UNKNOWN_SERVER_ERROR
    assert max(ErrorCode) is ErrorCode.REBOOTSTRAP_REQUIRED
    assert ErrorCode.REBOOTSTRAP_REQUIRED == 129


def test_codes_are_unique_and_contiguous_like_kafkas() -> None:
    # Kafka's codes run without a gap from -1; an alias or a gap would mean a wrong row.
    codes = [member.value for member in ErrorCode]
    assert len(codes) == len(set(codes)), f"duplicate codes: {sorted(c for c in codes if codes.count(c) > 1)}"
    missing = set(range(-1, 130)) - set(codes)
    assert not missing, f"codes missing from the table: {sorted(missing)}"
    assert len(ErrorCode.__members__) == len(ErrorCode) == 131, "an alias hides a duplicated code"


def test_names_are_kafka_style_upper_snake() -> None:
    bad = [m.name for m in ErrorCode if not re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", m.name)]
    assert not bad, f"names not in Kafka's UPPER_SNAKE form: {bad}"


def test_exactly_kafkas_retriable_codes_are_retriable() -> None:
    retriable = {m.name for m in ErrorCode if m.retriable}
    assert retriable - KAFKA_RETRIABLE == set(), "marked retriable but Kafka's exception is not"
    assert KAFKA_RETRIABLE - retriable == set(), "Kafka retries these but the table says no"


@pytest.mark.parametrize(
    ("name", "retriable"),
    [
        ("NOT_LEADER_OR_FOLLOWER", True),
        ("UNKNOWN_TOPIC_OR_PARTITION", True),
        ("REQUEST_TIMED_OUT", True),
        ("COORDINATOR_LOAD_IN_PROGRESS", True),
        ("NOT_COORDINATOR", True),
        ("NOT_ENOUGH_REPLICAS", True),
        ("KAFKA_STORAGE_ERROR", True),
        ("CORRUPT_MESSAGE", True),
        ("FETCH_SESSION_ID_NOT_FOUND", True),
        ("CONCURRENT_TRANSACTIONS", True),
        ("UNKNOWN_TOPIC_ID", True),
        ("OFFSET_OUT_OF_RANGE", False),  # the consumer resets its position instead
        ("BROKER_NOT_AVAILABLE", False),
        ("MESSAGE_TOO_LARGE", False),
        ("REBALANCE_IN_PROGRESS", False),
        ("UNKNOWN_MEMBER_ID", False),
        ("ILLEGAL_GENERATION", False),
        ("UNSUPPORTED_VERSION", False),
        ("INVALID_PRODUCER_EPOCH", False),
        ("UNKNOWN_PRODUCER_ID", False),
        ("PRODUCER_FENCED", False),
        ("MEMBER_ID_REQUIRED", False),
        ("FENCED_INSTANCE_ID", False),
        ("STALE_MEMBER_EPOCH", False),
        ("TRANSACTION_ABORTABLE", False),
        ("REBOOTSTRAP_REQUIRED", False),
        ("UNKNOWN_SERVER_ERROR", False),
        ("NONE", False),
    ],
)
def test_retriable_flag_sample(name: str, retriable: bool) -> None:
    assert ErrorCode[name].retriable is retriable, f"{name}: expected retriable={retriable}"


def test_every_code_has_a_one_line_message() -> None:
    bad = [m.name for m in ErrorCode if not m.message.strip() or "\n" in m.message]
    assert not bad, f"missing or multi-line messages: {bad}"


@pytest.mark.parametrize("code", [-1, 0, 3, 35, 129])
def test_from_code_known(code: int) -> None:
    assert ErrorCode.from_code(code) is ErrorCode(code)


@pytest.mark.parametrize("code", [-32768, -2, 130, 133, 999, 32767])
def test_from_code_unknown_is_unknown_server_error(code: int) -> None:
    assert ErrorCode.from_code(code) is ErrorCode.UNKNOWN_SERVER_ERROR


def test_members_are_the_int16_on_the_wire() -> None:
    assert struct.pack(">h", ErrorCode.UNKNOWN_SERVER_ERROR) == b"\xff\xff"
    assert struct.pack(">h", ErrorCode.NOT_COORDINATOR) == b"\x00\x10"
    assert ErrorCode.NONE == 0 and ErrorCode.UNSUPPORTED_VERSION == 35


def test_table_helpers_do_not_leak_into_the_enum() -> None:
    assert "_row" not in ErrorCode.__dict__ and "_members" not in ErrorCode.__dict__
    assert [m.name for m in ErrorCode] == [row[1] for row in errors_module._KAFKA_ERRORS]


def test_record_layer_error_names_are_kafka_codes() -> None:
    # protocol/records names its codes as strings; each must be a real member of this enum.
    classes = [record_errors.RecordBatchError, *_subclasses(record_errors.RecordBatchError)]
    for cls in classes:
        assert cls.error_name in ErrorCode.__members__, f"{cls.__name__}.error_name={cls.error_name!r}"


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_kafka_error_defaults_to_the_codes_message() -> None:
    err = KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    assert err.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert err.message == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION.message
    assert err.retriable is True
    assert str(err) == f"UNKNOWN_TOPIC_OR_PARTITION (3): {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION.message}"


def test_kafka_error_takes_a_specific_message() -> None:
    with pytest.raises(KafkaError) as caught:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "topic name must not be empty")
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert caught.value.message == "topic name must not be empty"
    assert caught.value.retriable is False
    assert str(caught.value) == "INVALID_REQUEST (42): topic name must not be empty"


def test_kafka_error_refuses_none() -> None:
    with pytest.raises(ValueError, match="NONE"):
        KafkaError(ErrorCode.NONE)
