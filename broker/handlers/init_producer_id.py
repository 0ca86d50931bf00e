"""InitProducerId (key 22), versions 0-5: producer ids for idempotent producers.

Kafka behaviours implemented (KafkaApis.handleInitProducerIdRequest, TransactionCoordinator.handleInitProducerId):
- No transactional id: a new producer id with epoch 0, always. Kafka "blindly accepts" these requests:
  even a v3+ request that names its current producer id and epoch (KIP-360) gets a fresh id, not an
  epoch bump; bumps exist only for transactional ids.
- v3+: producer id and epoch must both be given or both be -1, else INVALID_REQUEST.
- An empty transactional id -> INVALID_REQUEST, as Kafka answers.

Transactions are not supported yet, so a non-empty transactional id is refused with
TRANSACTIONAL_ID_AUTHORIZATION_FAILED. The response has no message field, so the code must speak for
itself and must stop the client at once: librdkafka treats only TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
CLUSTER_AUTHORIZATION_FAILED, INVALID_TRANSACTION_TIMEOUT and the fencing codes as fatal for
InitProducerId (``rd_kafka_idemp_check_error``) and retries everything else until
``init_transactions()`` times out; the Java client and kafka-python also fail fatally on it. "This broker
grants no transactional id" is the least misleading of those; the broker log says why
(``init_producer_id.transactions_unsupported``).

Left out: authorization (IDEMPOTENT_WRITE), transaction timeouts, persistence of allocated ids.
"""

from __future__ import annotations

from typing import Any

import structlog

from broker.handlers import RequestContext
from protocol import messages
from protocol.errors import ErrorCode

log = structlog.get_logger()

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
FIRST_EPOCH_BUMP_VERSION = 3


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
        log.warning("init_producer_id.transactions_unsupported", transactional_id=transactional_id,
                    client_id=header.client_id, error="TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
                    reason="transactions are not supported by this broker yet; use an idempotent producer "
                           "(no transactional.id)")
        return _response(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    producer_id = await ctx.broker.cluster.allocate_producer_id()
    log.debug("init_producer_id.allocated", producer_id=producer_id, client_id=header.client_id)
    return _response(ErrorCode.NONE, producer_id, 0)
