"""Version profiles: behave like a given Apache Kafka release (``kafka.version`` / ``--kafka-version``).

This module owns, per release, the API keys and version ranges that release's broker advertised in
ApiVersions, and turns them into the handler registry a broker with that profile serves: per API key,
the versions both the release and Moldau serve (an API the release lacked is not advertised; an API
Moldau lacks stays absent). Requests outside those ranges are refused as any unserved version is
(the connection closes; ApiVersions gets KIP-511's UNSUPPORTED_VERSION answer with the profile's ranges).

What a profile emulates, because clients see it:
- the advertised maxima of each release, so clients negotiate the versions they would with it;
- APIs added later are absent (2.8 has no DescribeTransactions/ListTransactions, added in 3.0);
- Kafka 4.0's KIP-896 floors: Fetch v0-3, ListOffsets v0, OffsetCommit v0-1, OffsetFetch v0,
  CreateTopics v0-1, DeleteTopics v0, OffsetForLeaderEpoch v0-1, DescribeConfigs v0 and
  DescribeLogDirs v0 are refused and not advertised; Produce v0-2 are refused but still advertised
  (KAFKA-18659: librdkafka before 2.11.1 turns compression off unless the range contains Produce v0).

What it does not emulate: the release's broker configs and their defaults (DescribeConfigs), ZooKeeper
or KRaft specifics, the feature fields of ApiVersions v3+ (3.9 and 4.0 brokers report metadata.version,
kraft.version, group.version, transaction.version ...; Moldau reports none, so a 4.0 Java producer
does not turn on transactions v2, which needs Produce v12 and EndTxn v5 that Moldau does not serve
anyway), and any behaviour of a handler that does not depend on the request version.

"4.0" is the 4.0 line as patched: 4.0.0 also refused JoinGroup v0-1, which 4.0.1 restored
(KAFKA-19444, apache/kafka#20116) because librdkafka before 2.11.0 needs them with Kerberos.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.handlers import HandlerRegistry, default_registry

# ApiVersions as a broker of each release answered it, for the API keys Moldau serves (others are left
# out: the intersection would drop them). api key -> (min, max). 2.8 and 3.0 are ZooKeeper-mode brokers
# (KRaft was not production-ready before 3.3; a 2.8 KRaft broker lacked the transaction APIs), 3.9's ZK
# and KRaft brokers agree on these keys, 4.0 is KRaft only.
# Sources: franz-go's pkg/kversion (its per-release z28, z30, z39 and b40 tables, each bump with its
# KAFKA ticket); for 4.0's floors also the deprecatedVersions of the Kafka JSON specs in
# ../shared/kafka-protocol, KIP-896's follow-ups (apache/kafka#18716/#18736 kept Metadata v0-3, #18727
# KAFKA-18659 Produce, #18221/#18262 FindCoordinator v0, #18324 DeleteGroups v0, #20116 JoinGroup v0-1)
# and the "4.x floor" column of ../shared/kafka-protocol/api-matrix.md, which all agree.
# Keys: 0 Produce, 1 Fetch, 2 ListOffsets, 3 Metadata, 8 OffsetCommit, 9 OffsetFetch, 10 FindCoordinator,
# 11 JoinGroup, 12 Heartbeat, 13 LeaveGroup, 14 SyncGroup, 15 DescribeGroups, 16 ListGroups,
# 17 SaslHandshake, 18 ApiVersions, 19 CreateTopics, 20 DeleteTopics, 21 DeleteRecords, 22 InitProducerId,
# 23 OffsetForLeaderEpoch, 24 AddPartitionsToTxn, 25 AddOffsetsToTxn, 26 EndTxn, 28 TxnOffsetCommit,
# 29 DescribeAcls, 30 CreateAcls, 31 DeleteAcls, 32 DescribeConfigs, 33 AlterConfigs, 35 DescribeLogDirs, 36 SaslAuthenticate, 37 CreatePartitions, 42 DeleteGroups,
# 44 IncrementalAlterConfigs, 47 OffsetDelete, 48 DescribeClientQuotas, 49 AlterClientQuotas,
# 50 DescribeUserScramCredentials,
# 51 AlterUserScramCredentials, 60 DescribeCluster, 61 DescribeProducers,
# 65 DescribeTransactions, 66 ListTransactions.
KAFKA_2_8: Mapping[int, tuple[int, int]] = {
    0: (0, 9), 1: (0, 12), 2: (0, 6), 3: (0, 11), 8: (0, 8), 9: (0, 7), 10: (0, 3), 11: (0, 7),
    12: (0, 4), 13: (0, 4), 14: (0, 5), 15: (0, 5), 16: (0, 4), 17: (0, 1), 18: (0, 3), 19: (0, 7), 20: (0, 6),
    21: (0, 2), 22: (0, 4), 23: (0, 4), 24: (0, 3), 25: (0, 3), 26: (0, 3), 28: (0, 3), 29: (0, 2), 30: (0, 2), 31: (0, 2), 32: (0, 4),
    33: (0, 2), 35: (0, 2), 36: (0, 2), 37: (0, 3), 42: (0, 2), 44: (0, 1), 47: (0, 0), 48: (0, 1), 49: (0, 1), 50: (0, 0), 51: (0, 0), 60: (0, 0), 61: (0, 0),
}
KAFKA_3_0: Mapping[int, tuple[int, int]] = {
    0: (0, 9), 1: (0, 12), 2: (0, 7), 3: (0, 11), 8: (0, 8), 9: (0, 8), 10: (0, 4), 11: (0, 7),
    12: (0, 4), 13: (0, 4), 14: (0, 5), 15: (0, 5), 16: (0, 4), 17: (0, 1), 18: (0, 3), 19: (0, 7), 20: (0, 6),
    21: (0, 2), 22: (0, 4), 23: (0, 4), 24: (0, 3), 25: (0, 3), 26: (0, 3), 28: (0, 3), 29: (0, 2), 30: (0, 2), 31: (0, 2), 32: (0, 4),
    33: (0, 2), 35: (0, 2), 36: (0, 2), 37: (0, 3), 42: (0, 2), 44: (0, 1), 47: (0, 0), 48: (0, 1), 49: (0, 1), 50: (0, 0), 51: (0, 0), 60: (0, 0), 61: (0, 0),
    65: (0, 0), 66: (0, 0),
}
KAFKA_3_9: Mapping[int, tuple[int, int]] = {
    0: (0, 11), 1: (0, 17), 2: (0, 9), 3: (0, 12), 8: (0, 9), 9: (0, 9), 10: (0, 6), 11: (0, 9),
    12: (0, 4), 13: (0, 5), 14: (0, 5), 15: (0, 5), 16: (0, 5), 17: (0, 1), 18: (0, 4), 19: (0, 7), 20: (0, 6),
    21: (0, 2), 22: (0, 5), 23: (0, 4), 24: (0, 5), 25: (0, 4), 26: (0, 4), 28: (0, 4), 29: (0, 3), 30: (0, 3), 31: (0, 3), 32: (0, 4),
    33: (0, 2), 35: (0, 4), 36: (0, 2), 37: (0, 3), 42: (0, 2), 44: (0, 1), 47: (0, 0), 48: (0, 1), 49: (0, 1), 50: (0, 0), 51: (0, 0), 60: (0, 1), 61: (0, 0),
    65: (0, 0), 66: (0, 1),
}
# The versions a 4.0 broker accepts; Produce's advertised minimum is in ADVERTISED_MIN below.
KAFKA_4_0: Mapping[int, tuple[int, int]] = {
    0: (3, 12), 1: (4, 17), 2: (1, 10), 3: (0, 13), 8: (2, 9), 9: (1, 9), 10: (0, 6), 11: (0, 9),
    12: (0, 4), 13: (0, 5), 14: (0, 5), 15: (0, 6), 16: (0, 5), 17: (0, 1), 18: (0, 4), 19: (2, 7), 20: (1, 6),
    21: (0, 2), 22: (0, 5), 23: (2, 4), 24: (0, 5), 25: (0, 4), 26: (0, 5), 28: (0, 5), 29: (1, 3), 30: (1, 3), 31: (1, 3), 32: (1, 4),
    33: (0, 2), 35: (1, 4), 36: (0, 2), 37: (0, 3), 42: (0, 2), 44: (0, 1), 47: (0, 0), 48: (0, 1), 49: (0, 1), 50: (0, 0), 51: (0, 0), 60: (0, 2), 61: (0, 0),
    65: (0, 0), 66: (0, 1),
}

RELEASES: Mapping[str, Mapping[int, tuple[int, int]]] = {
    "2.8": KAFKA_2_8, "3.0": KAFKA_3_0, "3.9": KAFKA_3_9, "4.0": KAFKA_4_0,
}
# Kafka 4 advertises Produce from v0 although it refuses v0-2 (ApiKeys.PRODUCE_API_VERSIONS_RESPONSE_
# MIN_VERSION, KAFKA-18659): librdkafka before 2.11.1 only compresses if the range contains Produce v0.
ADVERTISED_MIN: Mapping[str, Mapping[int, int]] = {"4.0": {0: 0}}

KAFKA_VERSIONS: tuple[str, ...] = tuple(RELEASES)


def registry_for(kafka_version: str | None) -> HandlerRegistry:
    """The handler registry a broker behaving like ``kafka_version`` serves (None: everything)."""
    if kafka_version is None:
        return default_registry()
    if kafka_version not in RELEASES:
        raise ValueError(f"unknown Kafka version {kafka_version!r}; known: {', '.join(KAFKA_VERSIONS)}")
    return default_registry().restricted(RELEASES[kafka_version], ADVERTISED_MIN.get(kafka_version))
