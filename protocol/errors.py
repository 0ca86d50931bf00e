"""Kafka's error codes: the one enum every response carries, with each code's retriability and meaning.

The numbers and names are Apache Kafka 4.0's (`org.apache.kafka.common.protocol.Errors`, -1 to 129);
they are wire protocol and never change. `retriable` is True exactly where Kafka's exception for the
code subclasses `RetriableException`: that is what the Java client retries on its own, and what
Kafka's generated protocol error table reports. The messages are short descriptions of Kafka's
meaning, written for Moldau; a handler that knows more passes its own text to `KafkaError`.

Codes added after 4.0 (130 STREAMS_INVALID_TOPOLOGY onwards, in 4.1) are left out until Moldau serves
the APIs that return them; `ErrorCode.from_code` maps any code it does not know to
UNKNOWN_SERVER_ERROR, as Kafka's clients do.
"""

from __future__ import annotations

import enum
from typing import Self

# (code, NAME, retriable, message): one row per Kafka error, in code order.
_KAFKA_ERRORS: tuple[tuple[int, str, bool, str], ...] = (
    (-1, "UNKNOWN_SERVER_ERROR", False, "The server hit an unexpected error while handling the request."),
    (0, "NONE", False, "No error."),
    (1, "OFFSET_OUT_OF_RANGE", False, "The offset is outside the range of offsets the partition holds."),
    (2, "CORRUPT_MESSAGE", True, "A record batch is corrupt: bad CRC or size, or a null key when compacted."),
    (3, "UNKNOWN_TOPIC_OR_PARTITION", True, "This broker does not host this topic-partition."),
    (4, "INVALID_FETCH_SIZE", False, "The requested fetch size is not valid."),
    (5, "LEADER_NOT_AVAILABLE", True, "The partition has no leader right now; an election is under way."),
    (6, "NOT_LEADER_OR_FOLLOWER", True, "This broker is not the leader (or not a replica) of the partition."),
    (7, "REQUEST_TIMED_OUT", True, "The request timed out."),
    (8, "BROKER_NOT_AVAILABLE", False, "The broker is not available."),
    (9, "REPLICA_NOT_AVAILABLE", True, "The replica is not available for the requested topic-partition."),
    (10, "MESSAGE_TOO_LARGE", False, "A record batch is larger than the broker or topic accepts."),
    (11, "STALE_CONTROLLER_EPOCH", False, "The request came from a controller that has since moved."),
    (12, "OFFSET_METADATA_TOO_LARGE", False, "The metadata attached to the offset commit is too large."),
    (13, "NETWORK_EXCEPTION", True, "The connection closed before a response was received."),
    (14, "COORDINATOR_LOAD_IN_PROGRESS", True, "The coordinator is still loading its state."),
    (15, "COORDINATOR_NOT_AVAILABLE", True, "The coordinator is not available."),
    (16, "NOT_COORDINATOR", True, "This broker is not the coordinator for that group or transactional id."),
    (17, "INVALID_TOPIC_EXCEPTION", False, "The topic is not valid, or not valid for this operation."),
    (18, "RECORD_LIST_TOO_LARGE", False, "A record batch is larger than the configured segment size."),
    (19, "NOT_ENOUGH_REPLICAS", True, "Rejected: fewer in-sync replicas than min.insync.replicas."),
    (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", True, "Written, but to fewer in-sync replicas than required."),
    (21, "INVALID_REQUIRED_ACKS", False, "The produce request asked for a value of acks that is not valid."),
    (22, "ILLEGAL_GENERATION", False, "The group generation id is not the current one."),
    (23, "INCONSISTENT_GROUP_PROTOCOL", False, "The member's protocols do not match the group's."),
    (24, "INVALID_GROUP_ID", False, "The group id is not valid."),
    (25, "UNKNOWN_MEMBER_ID", False, "The coordinator does not know this member id."),
    (26, "INVALID_SESSION_TIMEOUT", False, "The session timeout is outside the broker's allowed range."),
    (27, "REBALANCE_IN_PROGRESS", False, "The group is rebalancing; the member must rejoin."),
    (28, "INVALID_COMMIT_OFFSET_SIZE", False, "The offset commit data has a size that is not valid."),
    (29, "TOPIC_AUTHORIZATION_FAILED", False, "Not authorized to access the topic."),
    (30, "GROUP_AUTHORIZATION_FAILED", False, "Not authorized to access the group."),
    (31, "CLUSTER_AUTHORIZATION_FAILED", False, "Not authorized for this cluster operation."),
    (32, "INVALID_TIMESTAMP", False, "A record timestamp is outside the accepted range."),
    (33, "UNSUPPORTED_SASL_MECHANISM", False, "The broker does not support the requested SASL mechanism."),
    (34, "ILLEGAL_SASL_STATE", False, "The request is not valid in the current SASL state."),
    (35, "UNSUPPORTED_VERSION", False, "The broker does not support this version of the API."),
    (36, "TOPIC_ALREADY_EXISTS", False, "A topic with this name already exists."),
    (37, "INVALID_PARTITIONS", False, "The number of partitions is not valid (below 1, or a decrease)."),
    (38, "INVALID_REPLICATION_FACTOR", False, "The replication factor is below 1 or above the broker count."),
    (39, "INVALID_REPLICA_ASSIGNMENT", False, "The replica assignment is not valid."),
    (40, "INVALID_CONFIG", False, "The configuration is not valid."),
    (41, "NOT_CONTROLLER", True, "This broker is not the active controller."),
    (42, "INVALID_REQUEST", False, "The request is malformed or not valid here; see the broker log."),
    (43, "UNSUPPORTED_FOR_MESSAGE_FORMAT", False, "The log's message format does not support the request."),
    (44, "POLICY_VIOLATION", False, "The request breaks a configured policy."),
    (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", False, "A producer sequence number arrived out of order."),
    (46, "DUPLICATE_SEQUENCE_NUMBER", False, "The broker received a duplicate producer sequence number."),
    (47, "INVALID_PRODUCER_EPOCH", False, "The producer epoch is older than the current one."),
    (48, "INVALID_TXN_STATE", False, "The transactional operation is not valid in the current state."),
    (49, "INVALID_PRODUCER_ID_MAPPING", False, "The producer id is not the transactional id's."),
    (50, "INVALID_TRANSACTION_TIMEOUT", False, "The transaction timeout exceeds transaction.max.timeout.ms."),
    (51, "CONCURRENT_TRANSACTIONS", True, "Another operation on the same transaction is still in progress."),
    (52, "TRANSACTION_COORDINATOR_FENCED", False, "The sending transaction coordinator is not current."),
    (53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", False, "Not authorized to use the transactional id."),
    (54, "SECURITY_DISABLED", False, "Security features are disabled on this broker."),
    (55, "OPERATION_NOT_ATTEMPTED", False, "Not attempted, because another operation in the batch failed."),
    (56, "KAFKA_STORAGE_ERROR", True, "A disk error occurred while accessing the log."),
    (57, "LOG_DIR_NOT_FOUND", False, "The log directory is not one of the broker's configured directories."),
    (58, "SASL_AUTHENTICATION_FAILED", False, "SASL authentication failed."),
    (59, "UNKNOWN_PRODUCER_ID", False, "The broker has no state for this producer id (e.g. it expired)."),
    (60, "REASSIGNMENT_IN_PROGRESS", False, "A partition reassignment is in progress."),
    (61, "DELEGATION_TOKEN_AUTH_DISABLED", False, "Delegation tokens are not enabled."),
    (62, "DELEGATION_TOKEN_NOT_FOUND", False, "The delegation token was not found."),
    (63, "DELEGATION_TOKEN_OWNER_MISMATCH", False, "The principal is not the token's owner or a renewer."),
    (64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", False, "Not allowed on this channel."),
    (65, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", False, "Delegation token authorization failed."),
    (66, "DELEGATION_TOKEN_EXPIRED", False, "The delegation token has expired."),
    (67, "INVALID_PRINCIPAL_TYPE", False, "The principal type is not supported."),
    (68, "NON_EMPTY_GROUP", False, "The group still has members."),
    (69, "GROUP_ID_NOT_FOUND", False, "The group does not exist."),
    (70, "FETCH_SESSION_ID_NOT_FOUND", True, "The fetch session id is not known to this broker."),
    (71, "INVALID_FETCH_SESSION_EPOCH", True, "The fetch session epoch is not the expected one."),
    (72, "LISTENER_NOT_FOUND", True, "The leader has no listener matching the one this request came in on."),
    (73, "TOPIC_DELETION_DISABLED", False, "Topic deletion is disabled."),
    (74, "FENCED_LEADER_EPOCH", True, "The leader epoch in the request is older than the broker's."),
    (75, "UNKNOWN_LEADER_EPOCH", True, "The leader epoch in the request is newer than the broker's."),
    (76, "UNSUPPORTED_COMPRESSION_TYPE", False, "The client cannot read the partition's compression."),
    (77, "STALE_BROKER_EPOCH", False, "The broker epoch has changed."),
    (78, "OFFSET_NOT_AVAILABLE", True, "The new leader's high watermark has not caught up yet."),
    (79, "MEMBER_ID_REQUIRED", False, "The member must rejoin with the member id the coordinator assigned."),
    (80, "PREFERRED_LEADER_NOT_AVAILABLE", True, "The preferred leader is not available."),
    (81, "GROUP_MAX_SIZE_REACHED", False, "The group has reached group.max.size members."),
    (82, "FENCED_INSTANCE_ID", False, "Another member with this group.instance.id replaced this one."),
    (83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", True, "No eligible leader is available for the partition."),
    (84, "ELECTION_NOT_NEEDED", True, "The partition does not need a leader election."),
    (85, "NO_REASSIGNMENT_IN_PROGRESS", False, "No partition reassignment is in progress."),
    (86, "GROUP_SUBSCRIBED_TO_TOPIC", False, "Cannot delete offsets of a topic the group is subscribed to."),
    (87, "INVALID_RECORD", False, "A record failed the broker's validation and was rejected."),
    (88, "UNSTABLE_OFFSET_COMMIT", True, "Pending transactional offset commits must complete first."),
    (89, "THROTTLING_QUOTA_EXCEEDED", True, "The throttling quota has been exceeded."),
    (90, "PRODUCER_FENCED", False, "A newer producer with the same transactional id has fenced this one."),
    (91, "RESOURCE_NOT_FOUND", False, "The request refers to a resource that does not exist."),
    (92, "DUPLICATE_RESOURCE", False, "The request refers to the same resource twice."),
    (93, "UNACCEPTABLE_CREDENTIAL", False, "The credential does not meet the acceptance criteria."),
    (94, "INCONSISTENT_VOTER_SET", False, "The sender or receiver of a voter-only request is not a voter."),
    (95, "INVALID_UPDATE_VERSION", False, "The update version is not valid."),
    (96, "FEATURE_UPDATE_FAILED", False, "The finalized features could not be updated."),
    (97, "PRINCIPAL_DESERIALIZATION_FAILURE", False, "The forwarded principal could not be decoded."),
    (98, "SNAPSHOT_NOT_FOUND", False, "The requested snapshot was not found."),
    (99, "POSITION_OUT_OF_RANGE", False, "The position is negative or past the end of the snapshot."),
    (100, "UNKNOWN_TOPIC_ID", True, "This broker does not host a topic with this topic id."),
    (101, "DUPLICATE_BROKER_REGISTRATION", False, "This broker id is already registered."),
    (102, "BROKER_ID_NOT_REGISTERED", False, "The broker id is not registered."),
    (103, "INCONSISTENT_TOPIC_ID", True, "The topic id of the log does not match the one in the request."),
    (104, "INCONSISTENT_CLUSTER_ID", False, "The cluster id in the request does not match the server's."),
    (105, "TRANSACTIONAL_ID_NOT_FOUND", False, "The transactional id was not found."),
    (106, "FETCH_SESSION_TOPIC_ID_ERROR", True, "The fetch session used topic ids inconsistently."),
    (107, "INELIGIBLE_REPLICA", False, "The new ISR contains a replica that is not eligible."),
    (108, "NEW_LEADER_ELECTED", False, "The partition state was updated, but the leader has changed."),
    (109, "OFFSET_MOVED_TO_TIERED_STORAGE", False, "The offset has moved to tiered storage."),
    (110, "FENCED_MEMBER_EPOCH", False, "The member epoch is fenced; give up all partitions and rejoin."),
    (111, "UNRELEASED_INSTANCE_ID", False, "Another member holds this instance id and must leave first."),
    (112, "UNSUPPORTED_ASSIGNOR", False, "The group does not support this assignor or its versions."),
    (113, "STALE_MEMBER_EPOCH", False, "The member epoch is stale; retry after the next heartbeat response."),
    (114, "MISMATCHED_ENDPOINT_TYPE", False, "The request was sent to the wrong type of endpoint."),
    (115, "UNSUPPORTED_ENDPOINT_TYPE", False, "This endpoint type is not supported yet."),
    (116, "UNKNOWN_CONTROLLER_ID", False, "The controller id is not known."),
    (117, "UNKNOWN_SUBSCRIPTION_ID", False, "The telemetry subscription id is unknown or outdated."),
    (118, "TELEMETRY_TOO_LARGE", False, "The telemetry push is larger than the broker accepts."),
    (119, "INVALID_REGISTRATION", False, "The controller considers the broker registration not valid."),
    (120, "TRANSACTION_ABORTABLE", False, "The transaction failed; abort it to keep the transactional id."),
    (121, "INVALID_RECORD_STATE", False, "The record state is not valid; the acknowledgement failed."),
    (122, "SHARE_SESSION_NOT_FOUND", True, "The share session was not found."),
    (123, "INVALID_SHARE_SESSION_EPOCH", True, "The share session epoch is not the expected one."),
    (124, "FENCED_STATE_EPOCH", False, "The share-group state epoch does not match the share coordinator's."),
    (125, "INVALID_VOTER_KEY", False, "The voter key does not match the receiving replica's."),
    (126, "DUPLICATE_VOTER", False, "The voter is already in the voter set."),
    (127, "VOTER_NOT_FOUND", False, "The voter is not in the voter set."),
    (128, "INVALID_REGULAR_EXPRESSION", False, "The regular expression is not valid."),
    (129, "REBOOTSTRAP_REQUIRED", False, "The client's metadata is stale; it must rebootstrap."),
)


@enum.unique  # two rows with the same code would otherwise turn one name into a silent alias
class ErrorCode(enum.IntEnum):
    """A Kafka error code. Members compare and encode as the int16 Kafka puts on the wire.

    Look-ups: `ErrorCode(3)` or `ErrorCode["UNKNOWN_TOPIC_OR_PARTITION"]` are strict;
    `ErrorCode.from_code(n)` is lenient for codes read from peers.
    """

    retriable: bool
    message: str

    # The members come from the table above: building them with the enum's documented `_ignore_`
    # idiom keeps the table one literal instead of a hundred and thirty class attributes.
    _ignore_ = "_row _members"
    _members = vars()
    for _row in _KAFKA_ERRORS:
        _members[_row[1]] = (_row[0], _row[2], _row[3])

    def __new__(cls, code: int, retriable: bool, message: str) -> Self:
        member = int.__new__(cls, code)
        member._value_ = code
        member.retriable = retriable
        member.message = message
        return member

    @classmethod
    def from_code(cls, code: int) -> ErrorCode:
        """The member for `code`; a code this Kafka version does not define is UNKNOWN_SERVER_ERROR."""
        try:
            return cls(code)
        except ValueError:
            return cls.UNKNOWN_SERVER_ERROR


class KafkaError(Exception):
    """Raised by a handler to answer with a Kafka error code instead of a normal result.

    `message` defaults to the code's own description; pass a specific one (it may reach the client
    through the response's error message field, where the API has one).
    """

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        if code is ErrorCode.NONE:
            # An exception that means "no error" would be answered as success: always a bug.
            raise ValueError("KafkaError needs an error code other than NONE")
        self.code = code
        self.message = code.message if message is None else message
        super().__init__(f"{code.name} ({code.value}): {self.message}")

    @property
    def retriable(self) -> bool:
        return self.code.retriable
