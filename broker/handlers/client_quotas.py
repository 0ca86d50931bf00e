"""DescribeClientQuotas (key 48) and AlterClientQuotas (key 49), versions 0-1: Kafka's client quotas
(``producer_byte_rate``, ``consumer_byte_rate``, ``request_percentage``) by user and client id, with the
``<default>`` entities (a null name). The rules live in ``broker/quotas.py``.

Kafka behaviours implemented: DescribeClientQuotas needs DESCRIBE_CONFIGS on the cluster, AlterClientQuotas
ALTER_CONFIGS (else CLUSTER_AUTHORIZATION_FAILED, top level / per entry); a bad filter answers
INVALID_REQUEST at the top level with no entries; each altered entity gets its own result; a change is
saved before the answer.
"""

from __future__ import annotations

from typing import Any

from broker.handlers import RequestContext
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode


def handle_describe_client_quotas(header: Any, body: Any, ctx: RequestContext) -> Any:
    from broker.quotas import QuotaError

    response = messages.DescribeClientQuotasResponse
    if not ctx.authorized(AclOperation.DESCRIBE_CONFIGS, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        return response(throttle_time_ms=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                        error_message="Cluster authorization failed.", entries=None)
    components = [(c.entity_type, c.match_type, c.match) for c in body.components]
    try:
        found = ctx.broker.client_quotas.describe(components, body.strict)
    except QuotaError as exc:
        return response(throttle_time_ms=0, error_code=int(exc.code), error_message=exc.message, entries=None)
    return response(throttle_time_ms=0, error_code=0, error_message=None, entries=[
        response.EntryData(
            entity=[response.EntityData(entity_type=t, entity_name=n) for t, n in sorted(entity.items())],
            values=[response.ValueData(key=k, value=v) for k, v in sorted(values.items())])
        for entity, values in found])


async def handle_alter_client_quotas(header: Any, body: Any, ctx: RequestContext) -> Any:
    import asyncio

    response = messages.AlterClientQuotasResponse

    def entity_of(entry: Any) -> list[Any]:
        return [response.EntityData(entity_type=e.entity_type, entity_name=e.entity_name) for e in entry.entity]

    if not ctx.authorized(AclOperation.ALTER_CONFIGS, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        return response(throttle_time_ms=0, entries=[
            response.EntryData(error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                               error_message="Cluster authorization failed.", entity=entity_of(e))
            for e in body.entries])
    entries = [([(e.entity_type, e.entity_name) for e in entry.entity],
                [(op.key, op.value, op.remove) for op in entry.ops]) for entry in body.entries]
    # The quota file is written (and fsynced) off the event loop.
    results = await asyncio.to_thread(ctx.broker.client_quotas.alter, entries, body.validate_only)
    changed = [e for e, (code, _) in zip(entries, results, strict=True) if code == ErrorCode.NONE]
    if changed and not body.validate_only:
        ctx.log_audit("client_quotas.altered", entities=[dict(entity) for entity, _ in changed])
    return response(throttle_time_ms=0, entries=[
        response.EntryData(error_code=int(code), error_message=message, entity=entity_of(entry))
        for entry, (code, message) in zip(body.entries, results, strict=True)])
