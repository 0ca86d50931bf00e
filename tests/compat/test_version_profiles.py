"""Version profiles: ``moldau serve --kafka-version 2.8|3.0|3.9|4.0`` advertises the API versions that Kafka
release offered (within what Moldau serves), refuses the rest as Kafka does, and real clients produce and
consume against each profile.

The expected ranges come from ``broker.version_profiles`` (whose tables cite their sources); the tests also
pin a few release facts literally so that a wrong table fails here too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.version_profiles import KAFKA_VERSIONS, registry_for
from protocol import codec, messages
from protocol.errors import ErrorCode
from tests.compat.clients import Msg, create_topic, produce, unique
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.group_helpers import group_consume
from tests.compat.java_client import java_client

PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, API_VERSIONS = 0, 1, 2, 3, 8, 18
DESCRIBE_TRANSACTIONS = 65

# What each release advertised for a few keys, independent of the module's tables (Kafka's ranges cut to
# Moldau's: Produce 0-11, ApiVersions 0-4).
PRODUCE_ADVERTISED = {"2.8": (0, 9), "3.0": (0, 9), "3.9": (0, 11), "4.0": (0, 11)}
API_VERSIONS_ADVERTISED = {"2.8": (0, 3), "3.0": (0, 3), "3.9": (0, 4), "4.0": (0, 4)}

StartBroker = Callable[..., BrokerProcess]
RawSocket = Callable[[BrokerProcess], KafkaSocket]


def _ranges(response: object) -> dict[int, tuple[int, int]]:
    return {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}  # type: ignore[attr-defined]


def _profile_ranges(version: str) -> dict[int, tuple[int, int]]:
    return {key: (lo, hi) for key, lo, hi in registry_for(version).version_ranges()}


def _api_versions_request() -> object:
    return messages.ApiVersionsRequest(client_software_name="moldau-compat", client_software_version="1.0")


@pytest.mark.parametrize("version", KAFKA_VERSIONS)
def test_api_versions_lists_exactly_the_profile_ranges(start_broker: StartBroker, raw_socket: RawSocket,
                                                       version: str) -> None:
    """ApiVersions v0 and v3 list exactly the profile's keys and ranges. A 2.8 or 3.0 profile does not serve
    ApiVersions v4 (added in 3.9): a v4 request gets KIP-511's v0-format UNSUPPORTED_VERSION answer with the
    profile's ranges, and the client's retry at v3 succeeds, as against those releases."""
    broker = start_broker("--kafka-version", version)
    expected = _profile_ranges(version)
    sock = raw_socket(broker)
    for api_version in (0, 3):
        response = sock.request(API_VERSIONS, api_version, 10 + api_version, _api_versions_request())
        assert response.error_code == 0
        assert _ranges(response) == expected, f"{version} v{api_version}: {_ranges(response)} != {expected}"
    assert expected[PRODUCE] == PRODUCE_ADVERTISED[version]
    assert expected[API_VERSIONS] == API_VERSIONS_ADVERTISED[version]
    assert (DESCRIBE_TRANSACTIONS in expected) == (version != "2.8"), "DescribeTransactions came with 3.0"

    if API_VERSIONS_ADVERTISED[version][1] >= 4:
        assert sock.request(API_VERSIONS, 4, 20, _api_versions_request()).error_code == 0
        return
    sock.send_request(API_VERSIONS, 4, 20, _api_versions_request())
    _, response = codec.decode_response(API_VERSIONS, 0, sock.recv_frame())
    assert response.error_code == int(ErrorCode.UNSUPPORTED_VERSION)
    assert _ranges(response) == expected
    assert sock.request(API_VERSIONS, 3, 21, _api_versions_request()).error_code == 0


@pytest.mark.parametrize("version", KAFKA_VERSIONS)
@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_client_produces_and_consumes_in_a_group_at_each_profile(start_broker: StartBroker, client: str,
                                                                 version: str) -> None:
    """confluent-kafka (librdkafka 2.16) and kafka-python 3.0 negotiate their versions from the profile's
    ApiVersions (kafka-python starts at ApiVersions v4 and falls back at 2.8/3.0), produce five records
    with acks=all, then read them as a group member from the earliest offset and commit (JoinGroup,
    SyncGroup, OffsetCommit, OffsetFetch at the negotiated versions), never sending a version the profile
    refuses."""
    broker = start_broker("--kafka-version", version)
    bootstrap = broker.bootstrap
    topic = unique(f"profile-{version.replace('.', '')}-{client}")
    group = unique(f"profile-group-{version.replace('.', '')}-{client}")
    create_topic(bootstrap, topic, 1)
    values = [f"{version}-{client}-{i}".encode() for i in range(5)]
    produce(client, bootstrap, topic, [Msg(None, v) for v in values])

    run = group_consume(client, bootstrap, topic, group, len(values), [0], [{0: len(values)}])
    assert [value for _, _, value in sorted(run.records)] == values, (
        f"{client} at {version}: expected {values}, read {run.records} {run.detail}")
    assert run.positions() == [(0, offset) for offset in range(len(values))]
    assert run.committed == {0: len(values)}, f"{client} at {version}: committed {run.committed}"
    refused = [r for r in broker.records if r.get("event") == "request.unsupported_version"]
    assert not refused, f"{client} sent versions outside the {version} profile: {refused}"


@pytest.mark.parametrize("version", KAFKA_VERSIONS)
def test_java_client_produces_and_consumes_in_a_group_at_each_profile(start_broker: StartBroker,
                                                                     version: str) -> None:
    """Apache Kafka's Java client (kafka-clients, whose newest versions a 2.8 broker never offered)
    negotiates down to each profile: an idempotent acks=all producer and a group consumer that commits,
    with no request outside the profile's ranges."""
    broker = start_broker("--kafka-version", version)
    topic = unique(f"profile-{version.replace('.', '')}-java")
    group = unique(f"profile-group-{version.replace('.', '')}-java")
    create_topic(broker.bootstrap, topic, 1)
    acked = java_client("produce", broker.bootstrap, topic, "5", "none")["acked"]
    assert [ack["offset"] for ack in acked] == list(range(5))
    got = java_client("consume", broker.bootstrap, topic, group, "5")
    assert len(got["records"]) == 5 and got["committed"] == {"0": 5}
    refused = [r for r in broker.records if r.get("event") == "request.unsupported_version"]
    assert not refused, f"the Java client sent versions outside the {version} profile: {refused}"


@pytest.mark.parametrize(("api_key", "api_version", "body"), [
    (PRODUCE, 2, messages.ProduceRequest(acks=1, timeout_ms=1000, topic_data=[])),
    (FETCH, 3, messages.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1024, topics=[])),
    (LIST_OFFSETS, 0, messages.ListOffsetsRequest(replica_id=-1, topics=[])),
    (OFFSET_COMMIT, 1, messages.OffsetCommitRequest(group_id="g", generation_id_or_member_epoch=-1,
                                                    member_id="", topics=[])),
], ids=["produce-v2", "fetch-v3", "list-offsets-v0", "offset-commit-v1"])
def test_kafka_4_0_closes_the_connection_below_its_kip_896_floors(
        start_broker: StartBroker, raw_socket: RawSocket, api_key: int, api_version: int, body: object) -> None:
    """Kafka 4.0 removed old request versions (KIP-896): a request below the floor closes the connection,
    as any unsupported version does. Produce v0-2 are refused although ApiVersions still lists Produce
    from v0 (KAFKA-18659)."""
    broker = start_broker("--kafka-version", "4.0")
    sock = raw_socket(broker)
    sock.send_request(api_key, api_version, 5, body)
    assert sock.is_closed_by_peer(), f"api {api_key} v{api_version} did not close the connection at 4.0"
    broker.wait_for_log(lambda r: r.get("event") == "request.unsupported_version" and r.get("api_key") == api_key
                        and r.get("api_version") == api_version, what=f"request.unsupported_version for "
                        f"api {api_key} v{api_version}")


def test_kafka_4_0_keeps_metadata_v0_and_3_9_still_answers_list_offsets_v0(
        start_broker: StartBroker, raw_socket: RawSocket) -> None:
    """Metadata v0-3 stayed in Kafka 4.0 (KAFKA-18648: kafka-python and aiokafka probe with v0), while the
    same ListOffsets v0 request 4.0 refuses is answered by a 3.9 profile."""
    kafka_4 = start_broker("--kafka-version", "4.0")
    metadata = raw_socket(kafka_4).request(METADATA, 0, 1, messages.MetadataRequest(topics=[]))
    assert [b.node_id for b in metadata.brokers] == [1]

    kafka_39 = start_broker("--kafka-version", "3.9")
    offsets = raw_socket(kafka_39).request(LIST_OFFSETS, 0, 2, messages.ListOffsetsRequest(replica_id=-1, topics=[]))
    assert offsets.topics == []
