"""Classic group membership and administration: JoinGroup (key 11) v0-9, SyncGroup (14) v0-5,
Heartbeat (12) v0-4, LeaveGroup (13) v0-5, ListGroups (16) v0-5, DescribeGroups (15) v0-5 and
DeleteGroups (42) v0-2. The group logic lives in `broker.groups` (state machine and coordinator); these
handlers only translate versions.

Kafka behaviours implemented here (KafkaApis, JoinGroupResponse, LeaveGroupResponse):
- JoinGroup v0 has no rebalance timeout: the session timeout serves as both; v4+ dynamic members get
  MEMBER_ID_REQUIRED first (KIP-394); v9+ may be told ``skip_assignment`` (KIP-814); the protocol name is
  "" before v7 and null after when there is none; member ids are ``client_id-uuid`` (static members:
  ``group_instance_id-uuid``); the client host is Kafka's ``/address``;
- SyncGroup v5 checks the protocol type and name against the group's;
- LeaveGroup v0-2 leave one member and carry its error at top level; v3+ leave a batch and answer per
  member (KIP-345);
- ListGroups v4+ filter by state, v5+ by type (case-insensitive; every group here is "classic");
- DescribeGroups: an unknown group is described as Dead (no error) up to v5; member metadata and
  assignments only while Stable; v3+ authorized operations (READ, DELETE, DESCRIBE with no authorizer)
  when asked for;
- DeleteGroups: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, one result per distinct group id;
- while the coordinator loads ``__consumer_offsets`` at start-up: COORDINATOR_LOAD_IN_PROGRESS;
- with an authorizer: JoinGroup, SyncGroup, Heartbeat and LeaveGroup need READ on the group, DescribeGroups
  DESCRIBE, DeleteGroups DELETE (else GROUP_AUTHORIZATION_FAILED); ListGroups lists every group with
  DESCRIBE on the cluster, else only the groups the principal may DESCRIBE.
NOT_COORDINATOR is never returned here: this single node coordinates every group. (A fault rule that
moves the coordinator answers it before the handler runs; see ``broker/faults.py``.)
"""

from __future__ import annotations

from typing import Any

from broker.groups.state import JoinRequest, JoinResult, SyncRequest
from broker.handlers import RequestContext
from broker.handlers.metadata import AUTHORIZED_OPERATIONS_OMITTED, authorized_operations
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType, bit_field
from protocol import messages
from protocol.errors import ErrorCode

_JOIN = messages.JoinGroupResponse
_SYNC = messages.SyncGroupResponse
_LEAVE = messages.LeaveGroupResponse
_LIST = messages.ListGroupsResponse
_DESCRIBE = messages.DescribeGroupsResponse
_DELETE = messages.DeleteGroupsResponse

# What DescribeGroups reports without an authorizer: the group operations of Kafka before 4.0 (4.0 adds
# DESCRIBE_CONFIGS and ALTER_CONFIGS, which an authorizer's answer includes).
GROUP_OPERATIONS = bit_field((AclOperation.READ, AclOperation.DELETE, AclOperation.DESCRIBE))


def client_host(ctx: RequestContext) -> str:
    """The peer address as Kafka records it (``InetAddress.toString()``: "/127.0.0.1")."""
    peer = ctx.connection.peer
    host = peer.rpartition(":")[0] if ":" in peer else peer
    return "/" + host.strip("[]")


def _join_response(result: JoinResult, version: int) -> Any:
    name = result.protocol_name
    if version < 7:
        name = name or ""
    elif name == "":
        name = None
    return _JOIN(
        throttle_time_ms=0, error_code=int(result.error), generation_id=result.generation_id,
        protocol_type=result.protocol_type, protocol_name=name, leader=result.leader,
        skip_assignment=result.skip_assignment if version >= 9 else False, member_id=result.member_id,
        members=[_JOIN.JoinGroupResponseMember(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                               metadata=m.metadata) for m in result.members])


def _may(ctx: RequestContext, operation: AclOperation, group_id: str) -> bool:
    return ctx.authorized(operation, ResourceType.GROUP, group_id)


_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)


async def handle_join_group(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    if not _may(ctx, AclOperation.READ, body.group_id):
        return _JOIN(throttle_time_ms=0, error_code=_DENIED, generation_id=-1,
                     protocol_name="" if version < 7 else None, leader="", member_id=body.member_id, members=[])
    instance_id = body.group_instance_id if version >= 5 else None
    # Duplicate protocol names: the first one counts (Kafka keys the request's protocols by name).
    protocols: dict[str, bytes] = {}
    for p in body.protocols:
        protocols.setdefault(p.name, bytes(p.metadata))
    request = JoinRequest(
        group_id=body.group_id, member_id=body.member_id, group_instance_id=instance_id,
        client_id=header.client_id or "", client_host=client_host(ctx),
        session_timeout_ms=body.session_timeout_ms,
        rebalance_timeout_ms=body.rebalance_timeout_ms if version >= 1 else body.session_timeout_ms,
        protocol_type=body.protocol_type, protocols=tuple(protocols.items()),
        require_known_member_id=version >= 4 and instance_id is None,
        supports_skip_assignment=version >= 9)
    result = await ctx.broker.groups.join_group(request)
    return _join_response(result, version)


async def handle_sync_group(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    if not _may(ctx, AclOperation.READ, body.group_id):
        return _SYNC(throttle_time_ms=0, error_code=_DENIED, assignment=b"")
    request = SyncRequest(
        group_id=body.group_id, generation_id=body.generation_id, member_id=body.member_id,
        group_instance_id=body.group_instance_id if version >= 3 else None,
        protocol_type=body.protocol_type if version >= 5 else None,
        protocol_name=body.protocol_name if version >= 5 else None,
        assignments=tuple((a.member_id, bytes(a.assignment)) for a in body.assignments))
    result = await ctx.broker.groups.sync_group(request)
    return _SYNC(throttle_time_ms=0, error_code=int(result.error), protocol_type=result.protocol_type,
                 protocol_name=result.protocol_name, assignment=result.assignment)


def handle_heartbeat(header: Any, body: Any, ctx: RequestContext) -> Any:
    if not _may(ctx, AclOperation.READ, body.group_id):
        return messages.HeartbeatResponse(throttle_time_ms=0, error_code=_DENIED)
    instance_id = body.group_instance_id if ctx.api_version >= 3 else None
    error = ctx.broker.groups.heartbeat(body.group_id, body.member_id, instance_id, body.generation_id)
    return messages.HeartbeatResponse(throttle_time_ms=0, error_code=int(error))


def handle_leave_group(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    if version < 3:
        identities = [(body.member_id, None)]
    else:
        identities = [(m.member_id, m.group_instance_id) for m in body.members]
    if not _may(ctx, AclOperation.READ, body.group_id):
        return _LEAVE(throttle_time_ms=0, error_code=_DENIED)
    error, errors = ctx.broker.groups.leave_group(body.group_id, identities)
    if version < 3:
        # One member: its error goes at top level when there is no group-level one.
        top = error if error is not ErrorCode.NONE else next((e for e in errors if e is not ErrorCode.NONE),
                                                             ErrorCode.NONE)
        return _LEAVE(throttle_time_ms=0, error_code=int(top))
    members = [] if error is not ErrorCode.NONE else [
        _LEAVE.MemberResponse(member_id=member_id, group_instance_id=instance_id, error_code=int(e))
        for (member_id, instance_id), e in zip(identities, errors, strict=True)]
    return _LEAVE(throttle_time_ms=0, error_code=int(error), members=members)


def handle_list_groups(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    states = body.states_filter if version >= 4 else []
    types = body.types_filter if version >= 5 else []
    error, groups = ctx.broker.groups.list_groups(states, types)
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        allowed = ctx.authorized_names(AclOperation.DESCRIBE, ResourceType.GROUP, (g.group_id for g in groups))
        groups = [g for g in groups if g.group_id in allowed]
    return _LIST(throttle_time_ms=0, error_code=int(error), groups=[
        _LIST.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type, group_state=g.state,
                          group_type=g.group_type) for g in groups])


def handle_describe_groups(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    with_operations = version >= 3 and body.include_authorized_operations
    described = []
    for group_id in body.groups:
        if not _may(ctx, AclOperation.DESCRIBE, group_id):
            described.append(_DESCRIBE.DescribedGroup(error_code=_DENIED, group_id=group_id,
                                                      authorized_operations=AUTHORIZED_OPERATIONS_OMITTED))
            continue
        operations = (authorized_operations(ctx, ResourceType.GROUP, group_id, GROUP_OPERATIONS)
                      if with_operations else AUTHORIZED_OPERATIONS_OMITTED)
        error, group = ctx.broker.groups.describe_group(group_id)
        if group is None:
            described.append(_DESCRIBE.DescribedGroup(error_code=int(error), group_id=group_id,
                                                      authorized_operations=operations))
            continue
        described.append(_DESCRIBE.DescribedGroup(
            error_code=0, group_id=group.group_id, group_state=group.state, protocol_type=group.protocol_type,
            protocol_data=group.protocol_data, authorized_operations=operations,
            members=[_DESCRIBE.DescribedGroupMember(
                member_id=m.member_id, group_instance_id=m.group_instance_id if version >= 4 else None,
                client_id=m.client_id, client_host=m.client_host, member_metadata=m.metadata,
                member_assignment=m.assignment) for m in group.members]))
    return _DESCRIBE(throttle_time_ms=0, groups=described)


async def handle_delete_groups(header: Any, body: Any, ctx: RequestContext) -> Any:
    names = list(dict.fromkeys(body.groups_names))
    allowed = ctx.authorized_names(AclOperation.DELETE, ResourceType.GROUP, names)
    results = dict(await ctx.broker.groups.delete_groups([n for n in names if n in allowed]))
    return _DELETE(throttle_time_ms=0, results=[
        _DELETE.DeletableGroupResult(group_id=group_id, error_code=int(results.get(
            group_id, ErrorCode.GROUP_AUTHORIZATION_FAILED))) for group_id in names])
