"""InitProducerId (key 22), versions 0-5: producer ids for idempotent and transactional producers.

Kafka behaviours implemented (KafkaApis.handleInitProducerIdRequest, TransactionCoordinator.handleInitProducerId):
- No transactional id: a new producer id with epoch 0, always. Kafka "blindly accepts" these requests:
  even a v3+ request that names its current producer id and epoch (KIP-360) gets a fresh id, not an
  epoch bump; bumps exist only for transactional ids.
- A transactional id goes to the transaction coordinator (`broker.transactions`): epoch bumps, fencing,
  KIP-360 resumption, CONCURRENT_TRANSACTIONS while a transaction completes, INVALID_TRANSACTION_TIMEOUT
  outside 1..``transaction.max.timeout.ms``, COORDINATOR_LOAD_IN_PROGRESS during its start-up load.
  PRODUCER_FENCED exists from v4; older versions get INVALID_PRODUCER_EPOCH, as Kafka maps it.
- v3+: producer id and epoch must both be given or both be -1, else INVALID_REQUEST.
- An empty transactional id -> INVALID_REQUEST, as Kafka answers.

- With an authorizer: a transactional id needs WRITE on it (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED); an
  idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic (Kafka 3's rule, else
  CLUSTER_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

import structlog

from broker.handlers import RequestContext
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode

log = structlog.get_logger()

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
FIRST_EPOCH_BUMP_VERSION = 3
FIRST_PRODUCER_FENCED_VERSION = 4


def _response(code: ErrorCode, producer_id: int = NO_PRODUCER_ID, epoch: int = NO_PRODUCER_EPOCH) -> Any:
    return messages.InitProducerIdResponse(throttle_time_ms=0, error_code=int(code), producer_id=producer_id,
                                           producer_epoch=epoch)


async def handle_init_producer_id(header: Any, body: Any, ctx: RequestContext) -> Any:
    if ctx.api_version >= FIRST_EPOCH_BUMP_VERSION:
        given = (body.producer_id != NO_PRODUCER_ID, body.producer_epoch != NO_PRODUCER_EPOCH)
        if given[0] != given[1]:
            ctx.log_rejected("init_producer_id.rejected", error="INVALID_REQUEST", producer_id=body.producer_id,
                     producer_epoch=body.producer_epoch,
                     reason="producer id and epoch must both be -1 or both be valid")
            return _response(ErrorCode.INVALID_REQUEST)
    transactional_id = body.transactional_id
    if transactional_id is not None:
        if transactional_id == "":
            ctx.log_rejected("init_producer_id.rejected", error="INVALID_REQUEST", reason="empty transactional id")
            return _response(ErrorCode.INVALID_REQUEST)
        if not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            return _response(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        resuming = ctx.api_version >= FIRST_EPOCH_BUMP_VERSION and body.producer_id != NO_PRODUCER_ID
        expected = (body.producer_id, body.producer_epoch) if resuming else None
        error, producer_id, epoch = await ctx.broker.transactions.init_producer_id(
            transactional_id, body.transaction_timeout_ms, expected)
        if error is ErrorCode.PRODUCER_FENCED and ctx.api_version < FIRST_PRODUCER_FENCED_VERSION:
            error = ErrorCode.INVALID_PRODUCER_EPOCH
        if error is not ErrorCode.NONE:
            ctx.log_rejected("init_producer_id.rejected", transactional_id=transactional_id, error=error.name,
                             transaction_timeout_ms=body.transaction_timeout_ms)
            return _response(error)
        return _response(ErrorCode.NONE, producer_id, epoch)
    if not _may_write_idempotently(ctx):
        return _response(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    producer_id = await ctx.broker.cluster.allocate_producer_id()
    log.debug("init_producer_id.allocated", producer_id=producer_id, client_id=header.client_id)
    return _response(ErrorCode.NONE, producer_id, 0)


def _may_write_idempotently(ctx: RequestContext) -> bool:
    acls = ctx.broker.acls
    if acls is None or ctx.authorized(AclOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        return True
    conn = ctx.connection
    return acls.authorizer.authorize_any(conn.principal, conn.host, AclOperation.WRITE, ResourceType.TOPIC)
