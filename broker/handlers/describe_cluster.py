"""DescribeCluster (key 60), versions 0-1: this broker, the cluster id and the controller.

Kafka behaviours implemented (``AuthHelper.computeDescribeClusterResponse`` as a broker answers it):

- the broker list is this node with its advertised host and port and ``broker.rack``; the controller
  id is this node, as in Metadata (a single node is its own controller);
- ``cluster_authorized_operations``: INT32_MIN unless asked for; when asked, the cluster operations the
  principal may do (every one without an authorizer);
- v1 ``endpoint_type``: 1 (brokers) is served and echoed; 2 (controllers) answers
  MISMATCHED_ENDPOINT_TYPE, since this listener is a broker endpoint; any other value answers
  UNSUPPORTED_ENDPOINT_TYPE (INVALID_REQUEST for v0), each with Kafka's message.

``include_fenced_brokers`` (v2) is newer than the served versions; no broker is ever fenced here.
"""

from __future__ import annotations

from typing import Any

from broker.handlers import RequestContext
from broker.handlers.metadata import AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS, authorized_operations
from broker.security.acls import CLUSTER_RESOURCE_NAME, ResourceType
from protocol import messages
from protocol.errors import ErrorCode

ENDPOINT_BROKER = 1
ENDPOINT_CONTROLLER = 2
_ENDPOINT_NAMES = {ENDPOINT_BROKER: "BROKER", ENDPOINT_CONTROLLER: "CONTROLLER"}


def handle_describe_cluster(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    broker = ctx.broker
    response = messages.DescribeClusterResponse
    endpoint = body.endpoint_type if version >= 1 else ENDPOINT_BROKER
    if endpoint not in _ENDPOINT_NAMES:
        code = ErrorCode.INVALID_REQUEST if version == 0 else ErrorCode.UNSUPPORTED_ENDPOINT_TYPE
        return response(throttle_time_ms=0, error_code=int(code),
                        error_message=f"Unsupported endpoint type {endpoint}")
    if endpoint != ENDPOINT_BROKER:
        code = ErrorCode.INVALID_REQUEST if version == 0 else ErrorCode.MISMATCHED_ENDPOINT_TYPE
        return response(throttle_time_ms=0, error_code=int(code),
                        error_message=f"The request was sent to an endpoint of type BROKER, but we wanted an "
                                      f"endpoint of type {_ENDPOINT_NAMES[endpoint]}")
    membership = broker.membership
    return response(
        throttle_time_ms=0, error_code=0, error_message=None, endpoint_type=ENDPOINT_BROKER,
        cluster_id=broker.cluster_id, controller_id=membership.controller_id,
        brokers=[response.DescribeClusterBroker(broker_id=n.node_id, host=n.host, port=n.port, rack=n.rack)
                 for n in membership.nodes(ctx.connection.listener, ctx.connection.advertised)],
        cluster_authorized_operations=authorized_operations(
            ctx, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME, CLUSTER_OPERATIONS)
        if body.include_cluster_authorized_operations else AUTHORIZED_OPERATIONS_OMITTED)
