"""FindCoordinator (key 10), versions 0-6: this broker coordinates every group and transactional id.

Kafka behaviours implemented (KafkaApis.handleFindCoordinatorRequest):
- Key type 0 (group) and 1 (transaction); any other key type -> INVALID_REQUEST. v0 has no key type
  and always means a group.
- v0-3 answer one key in the top-level fields; v4+ answer each of ``coordinator_keys`` in
  ``coordinators`` (KIP-699 batching).
- An empty key -> INVALID_REQUEST (Kafka rejects empty group and transactional ids here).
Served before the group coordinator exists because librdkafka enables LZ4 (and, in old releases, other
features) only when FindCoordinator is advertised (api-matrix.md note 3). The groups and transactions
themselves are answered by their own handlers when those land.
A fault rule that moves the group coordinator answers COORDINATOR_NOT_AVAILABLE for groups before this
handler runs (``broker/faults.py``).
Left out: creating ``__consumer_offsets`` / ``__transaction_state`` here (Kafka creates them on first use).
"""

from __future__ import annotations

from typing import Any

from broker.handlers import RequestContext
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode

GROUP, TRANSACTION = 0, 1
_RESP = messages.FindCoordinatorResponse
_UNAVAILABLE = "The coordinator is not reachable through this listener"


def _check(ctx: RequestContext, key: str, key_type: int) -> tuple[ErrorCode, str] | None:
    if key_type not in (GROUP, TRANSACTION):
        return ErrorCode.INVALID_REQUEST, f"Unknown coordinator key type {key_type}: use 0 (group) or 1 (transaction)"
    if not key:
        what = "group id" if key_type == GROUP else "transactional id"
        return ErrorCode.INVALID_REQUEST, f"The {what} must not be empty"
    # With an authorizer, Kafka answers only principals that may DESCRIBE the group or transactional id.
    if key_type == GROUP and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, key):
        return ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed."
    if key_type == TRANSACTION and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, key):
        return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "Transactional Id authorization failed."
    return None


def _coordinator(ctx: RequestContext, key_type: int, key: str) -> Any:
    """The broker coordinating ``key`` (this one, unless brokers share PostgreSQL storage), as seen
    through this connection's listener; None when it has no endpoint there."""
    membership = ctx.broker.membership
    node_id = membership.coordinator_of(key_type, key)
    return membership.node(node_id, ctx.connection.listener, ctx.connection.advertised)


def handle_find_coordinator(header: Any, body: Any, ctx: RequestContext) -> Any:
    key_type = body.key_type if ctx.api_version >= 1 else GROUP
    if ctx.api_version >= 4:
        coordinators = []
        for key in body.coordinator_keys:
            error = _check(ctx, key, key_type)
            found = _coordinator(ctx, key_type, key) if error is None else None
            if error is None and found is None:
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE, _UNAVAILABLE
            if error is None:
                coordinators.append(_RESP.Coordinator(key=key, node_id=found.node_id, host=found.host,
                                                      port=found.port, error_code=0, error_message=None))
            else:
                coordinators.append(_RESP.Coordinator(key=key, node_id=-1, host="", port=-1,
                                                      error_code=int(error[0]), error_message=error[1]))
        return _RESP(throttle_time_ms=0, coordinators=coordinators)
    error = _check(ctx, body.key, key_type)
    found = _coordinator(ctx, key_type, body.key) if error is None else None
    if error is None and found is None:
        error = ErrorCode.COORDINATOR_NOT_AVAILABLE, _UNAVAILABLE
    if error is not None:
        return _RESP(throttle_time_ms=0, error_code=int(error[0]), error_message=error[1], node_id=-1, host="",
                     port=-1)
    return _RESP(throttle_time_ms=0, error_code=0, error_message=None, node_id=found.node_id, host=found.host,
                 port=found.port)
