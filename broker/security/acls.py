"""ACL authorization with the semantics of Kafka's KRaft authorizer (``StandardAuthorizer`` and
``StandardAuthorizerData``): the ACL enums with their wire codes, ACL bindings and binding filters (what
CreateAcls, DescribeAcls and DeleteAcls carry), and the in-memory ``Authorizer`` that answers "may this
principal, from this host, do this operation on this resource?".

Decision for one action (``Authorizer.authorize``), as StandardAuthorizer makes it:

1. A super user (the exact principal string, e.g. ``User:admin``, listed in ``super.users``) is allowed.
2. The ACLs that apply to the resource are those of its resource type that are LITERAL with its exact name,
   LITERAL with the wildcard name ``*``, or PREFIXED with a prefix of its name (the whole name included).
3. Of those, an ACL *matches the request* when its principal is the request's or ``User:*``, its host is
   the client's address or ``*``, and its operation grants the requested one (``implied_operations``).
4. Any matching DENY: denied. Otherwise any matching ALLOW: allowed.
5. Otherwise, when no ACL applies to the resource at all (step 2, whatever its principal, host, operation
   or permission), ``allow.everyone.if.no.acl.found`` decides; when some do but none matched, denied.

Pure code, safe to share between threads (one lock guards the indexes); nothing here does I/O.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Self

from broker.config import ConfigError
from protocol.errors import ErrorCode

WILDCARD_RESOURCE = "*"
WILDCARD_PRINCIPAL = "User:*"
WILDCARD_HOST = "*"
CLUSTER_RESOURCE_NAME = "kafka-cluster"
# Kafka's authorizeByResourceType first authorizes this literal name, so that a super user is allowed even
# where DENY ACLs would stop the per-binding scan.
_PROBE_RESOURCE_NAME = "hardcode"
UNKNOWN_CODE = 0  # the UNKNOWN member of every ACL enum


class _KafkaCode(enum.IntEnum):
    """An ACL enum whose members encode as Kafka's int8 wire codes."""

    @classmethod
    def from_code(cls, code: int) -> Self:
        """The member for `code`; a code Kafka does not define is UNKNOWN, as Kafka's ``fromCode`` has it."""
        try:
            return cls(code)
        except ValueError:
            return cls["UNKNOWN"]


class ResourceType(_KafkaCode):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_KafkaCode):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(_KafkaCode):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(_KafkaCode):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


# Every operation an ACL may name (Kafka's AclEntry.ACL_OPERATIONS): UNKNOWN and ANY are filter-only.
ACL_OPERATIONS: frozenset[AclOperation] = frozenset(
    op for op in AclOperation if op not in (AclOperation.UNKNOWN, AclOperation.ANY))

# The operations each resource type supports (Kafka 4.0's AclEntry.supportedOperations): the candidates
# handlers report in authorized-operations fields.
SUPPORTED_OPERATIONS: dict[ResourceType, frozenset[AclOperation]] = {
    ResourceType.TOPIC: frozenset({
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}),
    ResourceType.GROUP: frozenset({
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS}),
    ResourceType.CLUSTER: frozenset({
        AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE}),
    ResourceType.TRANSACTIONAL_ID: frozenset({AclOperation.DESCRIBE, AclOperation.WRITE}),
    ResourceType.DELEGATION_TOKEN: frozenset({AclOperation.DESCRIBE}),
    ResourceType.USER: frozenset({AclOperation.CREATE_TOKENS, AclOperation.DESCRIBE_TOKENS}),
}

_IMPLIES_DESCRIBE = frozenset({AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER})
_IMPLIES_DESCRIBE_CONFIGS = frozenset({AclOperation.ALTER_CONFIGS})


def implied_operations(
    operation: AclOperation, permission_type: AclPermissionType = AclPermissionType.ALLOW,
) -> frozenset[AclOperation]:
    """The operations an ACL naming `operation` with `permission_type` applies to (StandardAuthorizerData's
    ``findResult``):

    - ``ALL`` applies to every operation, for ALLOW and DENY alike.
    - An ALLOW of READ, WRITE, DELETE or ALTER also allows DESCRIBE; an ALLOW of ALTER_CONFIGS also allows
      DESCRIBE_CONFIGS. No other implication exists (READ does not imply WRITE, ALTER does not imply
      ALTER_CONFIGS, ...).
    - A DENY applies only to the operation it names: denying READ does not deny DESCRIBE, and denying
      DESCRIBE does not deny READ. Only a DENY of ALL denies everything.
    """
    if operation not in ACL_OPERATIONS:
        raise ValueError(f"an ACL cannot name the operation {operation.name}")
    if permission_type not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
        raise ValueError(f"an ACL cannot have the permission type {permission_type.name}")
    if operation is AclOperation.ALL:
        return ACL_OPERATIONS
    implied = {operation}
    if permission_type is AclPermissionType.ALLOW:
        if operation in _IMPLIES_DESCRIBE:
            implied.add(AclOperation.DESCRIBE)
        if operation in _IMPLIES_DESCRIBE_CONFIGS:
            implied.add(AclOperation.DESCRIBE_CONFIGS)
    return frozenset(implied)


# Looked up on every authorization; computing the implication sets once keeps that a dict lookup.
_GRANTS: dict[tuple[AclOperation, AclPermissionType], frozenset[AclOperation]] = {
    (op, perm): implied_operations(op, perm)
    for op in ACL_OPERATIONS for perm in (AclPermissionType.ALLOW, AclPermissionType.DENY)
}


def bit_field(operations: Iterable[AclOperation]) -> int:
    """Kafka's authorized-operations int32 (``Utils.to32BitField``): bit i set for the operation with code i."""
    value = 0
    for op in operations:
        code = int(op)
        if not 0 <= code < 32:
            raise ValueError(f"operation code {code} does not fit a 32-bit field")
        value |= 1 << code
    # The field is a signed int32 on the wire; bit 31 is its sign.
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass(frozen=True)
class AclBinding:
    """One ACL: a resource pattern (type, name, LITERAL or PREFIXED) and an entry (principal, host,
    operation, ALLOW or DENY). Enum fields given as ints become members (unknown codes: UNKNOWN)."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission_type: AclPermissionType

    def __post_init__(self) -> None:
        _coerce_enums(self)

    def is_unknown(self) -> bool:
        """Kafka's ``AclBinding.isUnknown``: some enum field is UNKNOWN."""
        return UNKNOWN_CODE in (self.resource_type, self.pattern_type, self.operation, self.permission_type)

    def validate(self) -> tuple[ErrorCode, str] | None:
        """Why Kafka would not create this ACL, as (error code, message), or None when it would.

        The checks run in Kafka's order, each with the code a Kafka 4.0 CreateAcls answer carries:

        - An UNKNOWN enum value: INVALID_REQUEST. Kafka itself fails such a request while parsing it
          (``CreateAclsRequest.validate``) and closes the connection; a handler wanting that exact
          behaviour checks ``is_unknown()`` first.
        - resource type ANY, pattern type ANY or MATCH, operation ANY, permission type ANY:
          UNKNOWN_SERVER_ERROR, with the messages of the Java constructors that throw. In Kafka the
          exception escapes the handler, so every creation in that request gets this error.
        - A CLUSTER resource not named ``kafka-cluster``: INVALID_REQUEST (checked by the broker's
          handler before the empty-name check, so it wins for an empty CLUSTER name too).
        - An empty resource name: INVALID_REQUEST.
        - A principal with no colon (the controller's check; Kafka accepts any ``Type:name`` with a colon,
          even an empty type or name): INVALID_REQUEST.

        Kafka does not check the host, nor whether the operation suits the resource type.
        """
        if self.is_unknown():
            return ErrorCode.INVALID_REQUEST, "CreatableAcls contain unknown elements"
        if self.resource_type is ResourceType.ANY:
            return ErrorCode.UNKNOWN_SERVER_ERROR, "resourceType must not be ANY"
        if self.pattern_type in (PatternType.ANY, PatternType.MATCH):
            return ErrorCode.UNKNOWN_SERVER_ERROR, f"patternType must not be {self.pattern_type.name}"
        if self.operation is AclOperation.ANY:
            return ErrorCode.UNKNOWN_SERVER_ERROR, "operation must not be ANY"
        if self.permission_type is AclPermissionType.ANY:
            return ErrorCode.UNKNOWN_SERVER_ERROR, "permissionType must not be ANY"
        if self.resource_type is ResourceType.CLUSTER and self.resource_name != CLUSTER_RESOURCE_NAME:
            return (ErrorCode.INVALID_REQUEST,
                    f"The only valid name for the CLUSTER resource is {CLUSTER_RESOURCE_NAME}")
        if not self.resource_name:
            return ErrorCode.INVALID_REQUEST, "Invalid empty resource name"
        if ":" not in self.principal:
            message = (f"Could not parse principal from `{self.principal}` (no colon is present separating "
                       "the principal type from the principal name)")
            return ErrorCode.INVALID_REQUEST, message
        return None

    def to_filter(self) -> AclBindingFilter:
        """The filter that matches exactly this binding."""
        return AclBindingFilter(self.resource_type, self.resource_name, self.pattern_type, self.principal,
                                self.host, self.operation, self.permission_type)


@dataclass(frozen=True)
class AclBindingFilter:
    """A pattern over ACL bindings, as DescribeAcls and DeleteAcls carry it. None in a string field and
    ANY in an enum field match any value (None is also accepted for the enum fields and becomes ANY);
    pattern type MATCH matches every pattern that would apply to the named resource."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission_type: AclPermissionType = AclPermissionType.ANY

    def __post_init__(self) -> None:
        for name, enum_type in _ENUM_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, enum_type.ANY)
        _coerce_enums(self)

    def matches(self, binding: AclBinding) -> bool:
        """Kafka's ``AclBindingFilter.matches``. Principal and host compare exactly (a filter for
        ``User:alice`` does not match a ``User:*`` ACL). For the resource name: with pattern type ANY or the
        binding's own type the name must be equal; with MATCH a LITERAL binding matches its own name or
        ``*`` and a PREFIXED binding matches when its name starts the filter's name."""
        if self.resource_type is not ResourceType.ANY and self.resource_type != binding.resource_type:
            return False
        if (self.pattern_type not in (PatternType.ANY, PatternType.MATCH)
                and self.pattern_type != binding.pattern_type):
            return False
        if self.resource_name is not None:
            if self.pattern_type is PatternType.ANY or self.pattern_type == binding.pattern_type:
                if self.resource_name != binding.resource_name:
                    return False
            elif binding.pattern_type is PatternType.LITERAL:
                if binding.resource_name not in (self.resource_name, WILDCARD_RESOURCE):
                    return False
            elif binding.pattern_type is PatternType.PREFIXED:
                if not self.resource_name.startswith(binding.resource_name):
                    return False
            else:
                return False
        if self.principal is not None and self.principal != binding.principal:
            return False
        if self.host is not None and self.host != binding.host:
            return False
        if self.operation is not AclOperation.ANY and self.operation != binding.operation:
            return False
        return self.permission_type is AclPermissionType.ANY or self.permission_type == binding.permission_type

    def is_unknown(self) -> bool:
        """Kafka's ``AclBindingFilter.isUnknown``: some enum field is UNKNOWN."""
        return UNKNOWN_CODE in (self.resource_type, self.pattern_type, self.operation, self.permission_type)

    def validate(self) -> tuple[ErrorCode, str] | None:
        """The controller's DeleteAcls check (``AclControlManager.validateFilter``): a filter with an
        UNKNOWN value is INVALID_REQUEST. (On the wire Kafka refuses such a DescribeAcls or DeleteAcls
        request while parsing it and closes the connection.)"""
        if self.resource_type == UNKNOWN_CODE or self.pattern_type == UNKNOWN_CODE:
            return ErrorCode.INVALID_REQUEST, "Unknown patternFilter."
        if self.operation == UNKNOWN_CODE or self.permission_type == UNKNOWN_CODE:
            return ErrorCode.INVALID_REQUEST, "Unknown entryFilter."
        return None

    def find_indefinite_field(self) -> str | None:
        """Kafka's ``findIndefiniteField``: the first field that keeps this filter from naming exactly one
        binding, or None. Note Kafka's list: pattern type ANY is not on it (only MATCH and UNKNOWN)."""
        if self.resource_type is ResourceType.ANY:
            return "Resource type is ANY."
        if self.resource_type is ResourceType.UNKNOWN:
            return "Resource type is UNKNOWN."
        if self.resource_name is None:
            return "Resource name is NULL."
        if self.pattern_type is PatternType.MATCH:
            return "Resource pattern type is MATCH."
        if self.pattern_type is PatternType.UNKNOWN:
            return "Resource pattern type is UNKNOWN."
        if self.principal is None:
            return "Principal is NULL"
        if self.host is None:
            return "Host is NULL"
        if self.operation is AclOperation.ANY:
            return "Operation is ANY"
        if self.operation is AclOperation.UNKNOWN:
            return "Operation is UNKNOWN"
        if self.permission_type is AclPermissionType.ANY:
            return "Permission type is ANY"
        if self.permission_type is AclPermissionType.UNKNOWN:
            return "Permission type is UNKNOWN"
        return None

    def matches_at_most_one(self) -> bool:
        """Kafka's ``matchesAtMostOne``: no indefinite field."""
        return self.find_indefinite_field() is None


_ENUM_FIELDS: tuple[tuple[str, type[_KafkaCode]], ...] = (
    ("resource_type", ResourceType), ("pattern_type", PatternType),
    ("operation", AclOperation), ("permission_type", AclPermissionType))


def _coerce_enums(obj: AclBinding | AclBindingFilter) -> None:
    # Handlers build these from wire ints; turning them into members here means every comparison below
    # sees members, and an undefined code reads as UNKNOWN rather than failing.
    for name, enum_type in _ENUM_FIELDS:
        value = getattr(obj, name)
        if type(value) is not enum_type:
            object.__setattr__(obj, name, enum_type.from_code(int(value)))


def _concrete_operation(operation: AclOperation) -> AclOperation:
    op = AclOperation.from_code(operation)
    if op not in ACL_OPERATIONS:
        raise ValueError(f"cannot authorize the operation {op.name}")
    return op


def _concrete_resource_type(resource_type: ResourceType) -> ResourceType:
    rt = ResourceType.from_code(resource_type)
    if rt in (ResourceType.ANY, ResourceType.UNKNOWN):
        raise ValueError(f"cannot authorize on the resource type {rt.name}")
    return rt


def parse_super_users(text: str | None) -> frozenset[str]:
    """Kafka's ``super.users``: principals separated by ``;``, each trimmed, empty entries skipped; an
    entry without a colon is not a principal (ConfigError)."""
    users: set[str] = set()
    for entry in (text or "").split(";"):
        principal = entry.strip()
        if not principal:
            continue
        if ":" not in principal:
            raise ConfigError(f"super.users: {principal!r} is not a principal of the form Type:name "
                              "(e.g. User:admin)")
        users.add(principal)
    return frozenset(users)


class Authorizer:
    """The ACLs in force and the decisions they make (see the module docstring for the rules).

    ACLs are indexed by (resource type, name) for LITERAL ones (the wildcard ``*`` included) and by
    (resource type, prefix) for PREFIXED ones, with the set of prefix lengths present per type; one
    authorization costs a dict lookup per distinct prefix length, whatever the number of ACLs.
    """

    def __init__(self, *, super_users: Iterable[str] = (), allow_everyone_if_no_acl_found: bool = False) -> None:
        self._super_users = frozenset(super_users)
        self._allow_if_no_acl = allow_everyone_if_no_acl_found
        self._lock = threading.RLock()
        self._all: dict[AclBinding, None] = {}  # insertion-ordered set
        self._by_type: dict[ResourceType, dict[AclBinding, None]] = {}
        self._literal: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        self._prefixed: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        self._prefix_counts: dict[ResourceType, dict[int, int]] = {}  # length -> distinct prefixes of it
        self._prefix_lengths: dict[ResourceType, tuple[int, ...]] = {}  # sorted keys of the above

    def __repr__(self) -> str:
        return (f"Authorizer(acls={len(self._all)}, super_users={len(self._super_users)}, "
                f"allow_everyone_if_no_acl_found={self._allow_if_no_acl})")

    def __len__(self) -> int:
        return len(self._all)

    @property
    def super_users(self) -> frozenset[str]:
        return self._super_users

    @property
    def allow_everyone_if_no_acl_found(self) -> bool:
        return self._allow_if_no_acl

    # --- ACL changes and queries -------------------------------------------------------------------------

    def add(self, binding: AclBinding) -> bool:
        """Add an ACL; False if it was already present (Kafka's CreateAcls still answers success then).
        ValueError for a binding ``validate()`` rejects: those must never reach the indexes."""
        problem = binding.validate()
        if problem is not None:
            raise ValueError(f"invalid ACL binding {binding}: {problem[1]}")
        with self._lock:
            if binding in self._all:
                return False
            self._all[binding] = None
            self._by_type.setdefault(binding.resource_type, {})[binding] = None
            key = (binding.resource_type, binding.resource_name)
            if binding.pattern_type is PatternType.LITERAL:
                self._literal.setdefault(key, []).append(binding)
            else:
                entries = self._prefixed.setdefault(key, [])
                if not entries:
                    self._count_prefix(binding.resource_type, len(binding.resource_name), +1)
                entries.append(binding)
            return True

    def remove_matching(self, flt: AclBindingFilter) -> list[AclBinding]:
        """Remove every ACL the filter matches (DeleteAcls); returns them in the order they were added."""
        with self._lock:
            removed = [binding for binding in self._all if flt.matches(binding)]
            for binding in removed:
                self._remove(binding)
            return removed

    def describe(self, flt: AclBindingFilter) -> list[AclBinding]:
        """The ACLs the filter matches (DescribeAcls), in the order they were added."""
        with self._lock:
            return [binding for binding in self._all if flt.matches(binding)]

    def bindings(self) -> list[AclBinding]:
        with self._lock:
            return list(self._all)

    def _remove(self, binding: AclBinding) -> None:
        del self._all[binding]
        of_type = self._by_type[binding.resource_type]
        del of_type[binding]
        if not of_type:
            del self._by_type[binding.resource_type]
        key = (binding.resource_type, binding.resource_name)
        index = self._literal if binding.pattern_type is PatternType.LITERAL else self._prefixed
        entries = index[key]
        entries.remove(binding)
        if not entries:
            del index[key]
            if binding.pattern_type is PatternType.PREFIXED:
                self._count_prefix(binding.resource_type, len(binding.resource_name), -1)

    def _count_prefix(self, resource_type: ResourceType, length: int, delta: int) -> None:
        counts = self._prefix_counts.setdefault(resource_type, {})
        counts[length] = counts.get(length, 0) + delta
        if counts[length] == 0:
            del counts[length]
        self._prefix_lengths[resource_type] = tuple(sorted(counts))

    def _applicable(self, resource_type: ResourceType, resource_name: str) -> Iterator[AclBinding]:
        """The ACLs that apply to the resource, whoever they are for (step 2 of the module docstring)."""
        yield from self._literal.get((resource_type, resource_name), ())
        if resource_name != WILDCARD_RESOURCE:
            yield from self._literal.get((resource_type, WILDCARD_RESOURCE), ())
        for length in self._prefix_lengths.get(resource_type, ()):
            if length > len(resource_name):
                break
            yield from self._prefixed.get((resource_type, resource_name[:length]), ())

    # --- decisions ----------------------------------------------------------------------------------------

    def authorize(self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType,
                  resource_name: str) -> bool:
        """May `principal`, connected from `host` (the client's IP address as text), do `operation` on the
        resource? ValueError for a filter-only operation or resource type (ANY, UNKNOWN)."""
        operation = _concrete_operation(operation)
        resource_type = _concrete_resource_type(resource_type)
        if principal in self._super_users:
            return True
        with self._lock:
            acls = list(self._applicable(resource_type, resource_name))
        return self._decide(acls, principal, host, operation)

    def authorized_operations(self, principal: str, host: str, resource_type: ResourceType, resource_name: str,
                              candidates: Iterable[AclOperation] | None = None) -> set[AclOperation]:
        """The candidate operations `principal` may do on the resource, each decided as ``authorize`` would
        (Kafka asks once per operation the resource type supports; None means those,
        ``SUPPORTED_OPERATIONS``). Feed the result to ``bit_field`` for the response field."""
        resource_type = _concrete_resource_type(resource_type)
        wanted = SUPPORTED_OPERATIONS[resource_type] if candidates is None else candidates
        ops = {_concrete_operation(op) for op in wanted}
        if principal in self._super_users:
            return ops
        with self._lock:
            acls = list(self._applicable(resource_type, resource_name))
        return {op for op in ops if self._decide(acls, principal, host, op)}

    def _decide(self, acls: list[AclBinding], principal: str, host: str, operation: AclOperation) -> bool:
        if not acls:
            return self._allow_if_no_acl
        allowed = False
        for acl in acls:
            if acl.principal != principal and acl.principal != WILDCARD_PRINCIPAL:
                continue
            if acl.host != WILDCARD_HOST and acl.host != host:
                continue
            if operation not in _GRANTS[(acl.operation, acl.permission_type)]:
                continue
            if acl.permission_type is AclPermissionType.DENY:
                return False
            allowed = True
        return allowed

    def authorize_any(self, principal: str, host: str, operation: AclOperation,
                      resource_type: ResourceType) -> bool:
        """Kafka's ``authorizeByResourceType`` (the ``Authorizer`` interface's default method, which
        StandardAuthorizer uses): may `principal` do `operation` on at least one resource of the type?

        1. ``authorize`` on the literal resource named ``hardcode``: allowed there means allowed (this is
           what lets super users, wildcard ALLOWs and allow.everyone.if.no.acl.found through; note that
           ACLs on a prefix of "hardcode" take part too, as they do in Kafka).
        2. Otherwise only ACLs of the type whose host and principal match (principal equal or ``User:*``)
           and whose operation is `operation` itself or ALL count; the implications of
           ``implied_operations`` do not apply here. A LITERAL ``*`` DENY: denied. A LITERAL ``*`` ALLOW:
           allowed. Otherwise allowed if some LITERAL ALLOW name is neither denied by a LITERAL DENY of the
           same name nor starts with a PREFIXED DENY name, or some PREFIXED ALLOW name does not start with
           a PREFIXED DENY name (a LITERAL DENY never cancels a PREFIXED ALLOW).
        """
        operation = _concrete_operation(operation)
        resource_type = _concrete_resource_type(resource_type)
        if self.authorize(principal, host, operation, resource_type, _PROBE_RESOURCE_NAME):
            return True
        deny_literal: set[str] = set()
        deny_prefixed: set[str] = set()
        allow_literal: set[str] = set()
        allow_prefixed: set[str] = set()
        wildcard_allow = False
        with self._lock:
            candidates = list(self._by_type.get(resource_type, ()))
        for acl in candidates:
            if acl.host != WILDCARD_HOST and acl.host != host:
                continue
            if acl.principal != principal and acl.principal != WILDCARD_PRINCIPAL:
                continue
            if acl.operation is not operation and acl.operation is not AclOperation.ALL:
                continue
            literal = acl.pattern_type is PatternType.LITERAL
            if acl.permission_type is AclPermissionType.DENY:
                if literal and acl.resource_name == WILDCARD_RESOURCE:
                    return False
                (deny_literal if literal else deny_prefixed).add(acl.resource_name)
            elif literal and acl.resource_name == WILDCARD_RESOURCE:
                wildcard_allow = True
            else:
                (allow_literal if literal else allow_prefixed).add(acl.resource_name)
        if wildcard_allow:
            return True

        def dominated(name: str) -> bool:
            return any(name[:end] in deny_prefixed for end in range(1, len(name) + 1))

        if any(name not in deny_literal and not dominated(name) for name in allow_literal):
            return True
        return any(not dominated(name) for name in allow_prefixed)


def authorizer_from_settings(super_users: str | None, allow_everyone: bool) -> Authorizer:
    """An empty authorizer configured as Kafka's ``super.users`` (semicolon-separated principals) and
    ``allow.everyone.if.no.acl.found`` say. ConfigError for a malformed super.users entry."""
    return Authorizer(super_users=parse_super_users(super_users), allow_everyone_if_no_acl_found=allow_everyone)
