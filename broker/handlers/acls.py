"""DescribeAcls (key 29), CreateAcls (key 30) and DeleteAcls (key 31), versions 0-3.

Kafka behaviours implemented (KafkaApis / AclApis with StandardAuthorizer):

- without an authorizer (``authorizer.class.name`` unset) every answer is SECURITY_DISABLED, "No
  Authorizer is configured.";
- CreateAcls and DeleteAcls need ALTER on the cluster, DescribeAcls DESCRIBE on it; otherwise
  CLUSTER_AUTHORIZATION_FAILED (per creation, per filter, or for the whole DescribeAcls answer);
- v0 has no pattern type: LITERAL for bindings and filters;
- a creation Kafka cannot accept gets its own error (INVALID_REQUEST for unknown values, an empty name,
  a principal without a type, a cluster not named ``kafka-cluster``; UNKNOWN_SERVER_ERROR for ANY/MATCH
  values, as Kafka's own check throws there), the others are created; creating an existing ACL succeeds;
- DescribeAcls answers the matching ACLs grouped by resource pattern; a filter with UNKNOWN values is
  INVALID_REQUEST;
- DeleteAcls answers, per filter, the ACLs it removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker.handlers import RequestContext
from broker.security.acls import (
    CLUSTER_RESOURCE_NAME,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from protocol import messages
from protocol.errors import ErrorCode

_DISABLED = "No Authorizer is configured."


def _pattern(body: Any, version: int, field: str) -> PatternType:
    return PatternType.from_code(getattr(body, field)) if version >= 1 else PatternType.LITERAL


def _cluster_allowed(ctx: RequestContext, operation: AclOperation) -> bool:
    return ctx.authorized(operation, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)


async def handle_create_acls(header: Any, body: Any, ctx: RequestContext) -> Any:
    response = messages.CreateAclsResponse
    result = response.AclCreationResult

    def everyone(code: ErrorCode, message: str) -> Any:
        return response(throttle_time_ms=0, results=[result(error_code=int(code), error_message=message)
                                                      for _ in body.creations])

    service = ctx.broker.acls
    if service is None:
        return everyone(ErrorCode.SECURITY_DISABLED, _DISABLED)
    if not _cluster_allowed(ctx, AclOperation.ALTER):
        return everyone(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
    results = []
    valid: list[AclBinding] = []
    for creation in body.creations:
        binding = AclBinding(
            resource_type=ResourceType.from_code(creation.resource_type), resource_name=creation.resource_name,
            pattern_type=_pattern(creation, ctx.api_version, "resource_pattern_type"),
            principal=creation.principal, host=creation.host,
            operation=AclOperation.from_code(creation.operation),
            permission_type=AclPermissionType.from_code(creation.permission_type))
        problem = binding.validate()
        if problem is not None:
            ctx.log_rejected("acl.create_refused", binding=str(binding), error=problem[0].name, reason=problem[1])
            results.append(result(error_code=int(problem[0]), error_message=problem[1]))
            continue
        valid.append(binding)
        results.append(result(error_code=0, error_message=None))
    if valid:
        await service.create(valid)
        ctx.log_audit("acl.created", acls=[str(b) for b in valid])
    return response(throttle_time_ms=0, results=results)


def _filter(f: Any, version: int) -> AclBindingFilter:
    return AclBindingFilter(
        resource_type=ResourceType.from_code(f.resource_type_filter), resource_name=f.resource_name_filter,
        pattern_type=_pattern(f, version, "pattern_type_filter"), principal=f.principal_filter,
        host=f.host_filter, operation=AclOperation.from_code(f.operation),
        permission_type=AclPermissionType.from_code(f.permission_type))


def handle_describe_acls(header: Any, body: Any, ctx: RequestContext) -> Any:
    response = messages.DescribeAclsResponse
    service = ctx.broker.acls
    if service is None:
        return response(throttle_time_ms=0, error_code=int(ErrorCode.SECURITY_DISABLED), error_message=_DISABLED,
                        resources=[])
    if not _cluster_allowed(ctx, AclOperation.DESCRIBE):
        return response(throttle_time_ms=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                        error_message="Cluster authorization failed.", resources=[])
    flt = _filter(body, ctx.api_version)
    problem = flt.validate()
    if problem is not None:
        return response(throttle_time_ms=0, error_code=int(problem[0]), error_message=problem[1], resources=[])
    return response(throttle_time_ms=0, error_code=0, error_message=None,
                    resources=_grouped(service.authorizer.describe(flt)))


def _grouped(bindings: Iterable[AclBinding]) -> list[Any]:
    response = messages.DescribeAclsResponse
    resources: dict[tuple[int, str, int], list[Any]] = {}
    for b in bindings:
        resources.setdefault((int(b.resource_type), b.resource_name, int(b.pattern_type)), []).append(
            response.AclDescription(principal=b.principal, host=b.host, operation=int(b.operation),
                                    permission_type=int(b.permission_type)))
    return [response.DescribeAclsResource(resource_type=rtype, resource_name=name, pattern_type=pattern, acls=acls)
            for (rtype, name, pattern), acls in resources.items()]


async def handle_delete_acls(header: Any, body: Any, ctx: RequestContext) -> Any:
    response = messages.DeleteAclsResponse
    result = response.DeleteAclsFilterResult

    def everyone(code: ErrorCode, message: str) -> Any:
        return response(throttle_time_ms=0, filter_results=[
            result(error_code=int(code), error_message=message, matching_acls=[]) for _ in body.filters])

    service = ctx.broker.acls
    if service is None:
        return everyone(ErrorCode.SECURITY_DISABLED, _DISABLED)
    if not _cluster_allowed(ctx, AclOperation.ALTER):
        return everyone(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
    filters = [_filter(f, ctx.api_version) for f in body.filters]
    problems = [f.validate() for f in filters]
    removed = await service.delete(f for f, p in zip(filters, problems, strict=True) if p is None)
    removed_iter = iter(removed)
    results = []
    for problem in problems:
        if problem is not None:
            results.append(result(error_code=int(problem[0]), error_message=problem[1], matching_acls=[]))
            continue
        matched = next(removed_iter)
        results.append(result(error_code=0, error_message=None, matching_acls=[
            response.DeleteAclsMatchingAcl(
                error_code=0, error_message=None, resource_type=int(b.resource_type), resource_name=b.resource_name,
                pattern_type=int(b.pattern_type), principal=b.principal, host=b.host, operation=int(b.operation),
                permission_type=int(b.permission_type)) for b in matched]))
    deleted = [str(b) for group in removed for b in group]
    if deleted:
        ctx.log_audit("acl.deleted", acls=deleted)
    return response(throttle_time_ms=0, filter_results=results)
