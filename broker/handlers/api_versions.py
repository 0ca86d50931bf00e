"""ApiVersions (key 18), versions 0-4: the served API keys and version ranges, read from the registry.

Kafka behaviours implemented:
- a request at a version the broker does not serve gets a v0-format response with UNSUPPORTED_VERSION
  and the full list of ranges (KIP-511), so clients can retry at a version both sides know; the
  connection stays open (``unsupported_version_response``, called by the connection);
- v3+ requests whose ClientSoftwareName/Version are not valid get INVALID_REQUEST, as in Kafka;
- v3+ feature fields are empty (no feature versioning), FinalizedFeaturesEpoch -1.
"""

from __future__ import annotations

import re
from typing import Any

from broker.handlers import HandlerRegistry, RequestContext
from protocol import messages
from protocol.errors import ErrorCode

# Kafka's ApiVersionsRequest.isValid pattern for client software name and version.
_SOFTWARE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


def _api_keys(registry: HandlerRegistry) -> list[Any]:
    entry = messages.ApiVersionsResponse.ApiVersion
    return [entry(api_key=k, min_version=lo, max_version=hi) for k, lo, hi in registry.version_ranges()]


def api_versions_response(registry: HandlerRegistry, error: ErrorCode = ErrorCode.NONE) -> Any:
    return messages.ApiVersionsResponse(
        error_code=int(error),
        api_keys=_api_keys(registry),
        throttle_time_ms=0,
        supported_features=[],
        finalized_features_epoch=-1,
        finalized_features=[],
        zk_migration_ready=False,
    )


def unsupported_version_response(registry: HandlerRegistry) -> Any:
    """The answer to an ApiVersions version the broker does not serve; encode it at version 0."""
    return api_versions_response(registry, ErrorCode.UNSUPPORTED_VERSION)


def handle_api_versions(header: Any, body: Any, ctx: RequestContext) -> Any:
    if ctx.api_version >= 3:
        name, version = body.client_software_name, body.client_software_version
        ctx.connection.client_software_name = name
        ctx.connection.client_software_version = version
        if not (_SOFTWARE.fullmatch(name or "") and _SOFTWARE.fullmatch(version or "")):
            return messages.ApiVersionsResponse(error_code=int(ErrorCode.INVALID_REQUEST))
    return api_versions_response(ctx.registry)
