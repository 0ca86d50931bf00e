"""ACL authorization (broker/security/acls.py) against Kafka's StandardAuthorizer semantics, and the ACL
file store (broker/security/acl_store.py): round trip, atomic replace, mode 0600, corrupt files."""

from __future__ import annotations

import json
import random
import stat
from pathlib import Path

import pytest

from broker.config import ConfigError
from broker.security.acl_store import AclStore
from broker.security.acls import (
    ACL_OPERATIONS,
    SUPPORTED_OPERATIONS,
    WILDCARD_PRINCIPAL,
    WILDCARD_RESOURCE,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    Authorizer,
    PatternType,
    ResourceType,
    authorizer_from_settings,
    bit_field,
    implied_operations,
    parse_super_users,
)
from protocol.errors import ErrorCode

Op = AclOperation
RT = ResourceType
PT = PatternType
ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY
ALICE = "User:alice"
BOB = "User:bob"
HOST = "10.0.0.1"


def acl(name: str = "orders", op: AclOperation = Op.READ, perm: AclPermissionType = ALLOW,
        principal: str = ALICE, *, pattern: PatternType = PT.LITERAL, host: str = "*",
        rtype: ResourceType = RT.TOPIC) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, perm)


def authorizer(*bindings: AclBinding, super_users: tuple[str, ...] = (), allow_everyone: bool = False) -> Authorizer:
    a = Authorizer(super_users=super_users, allow_everyone_if_no_acl_found=allow_everyone)
    for b in bindings:
        assert a.add(b)
    return a


def can(a: Authorizer, op: AclOperation, name: str = "orders", principal: str = ALICE, host: str = HOST,
        rtype: ResourceType = RT.TOPIC) -> bool:
    return a.authorize(principal, host, op, rtype, name)


def test_enum_codes_are_kafkas_wire_codes() -> None:
    """ResourceType, PatternType, AclOperation and AclPermissionType carry Kafka's int8 codes; an undefined
    code reads as UNKNOWN (Kafka's fromCode), also when a binding is built from wire ints."""
    assert [(m.name, m.value) for m in RT] == [
        ("UNKNOWN", 0), ("ANY", 1), ("TOPIC", 2), ("GROUP", 3), ("CLUSTER", 4), ("TRANSACTIONAL_ID", 5),
        ("DELEGATION_TOKEN", 6), ("USER", 7)]
    assert [(m.name, m.value) for m in PT] == [
        ("UNKNOWN", 0), ("ANY", 1), ("MATCH", 2), ("LITERAL", 3), ("PREFIXED", 4)]
    assert [m.name for m in Op] == [
        "UNKNOWN", "ANY", "ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION",
        "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "CREATE_TOKENS", "DESCRIBE_TOKENS"]
    assert [m.value for m in Op] == list(range(15))
    assert [(m.name, m.value) for m in AclPermissionType] == [("UNKNOWN", 0), ("ANY", 1), ("DENY", 2), ("ALLOW", 3)]
    assert Op.from_code(99) is Op.UNKNOWN and RT.from_code(-1) is RT.UNKNOWN
    b = AclBinding(2, "t", 3, ALICE, "*", 42, 3)  # type: ignore[arg-type]
    assert (b.resource_type, b.pattern_type, b.operation, b.permission_type) == (RT.TOPIC, PT.LITERAL, Op.UNKNOWN,
                                                                                 ALLOW)


def test_literal_acl_matches_only_its_exact_name() -> None:
    """A LITERAL ACL applies to the resource of exactly that name and type, not to longer names, other
    names or the same name of another resource type."""
    a = authorizer(acl("orders", Op.READ))
    assert can(a, Op.READ, "orders")
    assert not can(a, Op.READ, "orders2")
    assert not can(a, Op.READ, "order")
    assert not can(a, Op.READ, "orders", rtype=RT.GROUP)


def test_prefixed_acl_matches_names_it_starts() -> None:
    """A PREFIXED ACL applies to every resource whose name starts with its name, the name itself included;
    several prefixes of different lengths are all consulted."""
    a = authorizer(acl("ord", Op.READ, pattern=PT.PREFIXED), acl("orders-eu", Op.WRITE, pattern=PT.PREFIXED))
    assert can(a, Op.READ, "ord") and can(a, Op.READ, "orders") and can(a, Op.READ, "orders-eu-1")
    assert not can(a, Op.READ, "or") and not can(a, Op.READ, "xord")
    assert can(a, Op.WRITE, "orders-eu-1") and not can(a, Op.WRITE, "orders-us")


def test_literal_wildcard_matches_every_name_of_its_type() -> None:
    """LITERAL ``*`` applies to every resource of its type (and no other type); PREFIXED ``*`` is no
    wildcard, it only covers names starting with an asterisk."""
    a = authorizer(acl(WILDCARD_RESOURCE, Op.READ))
    assert can(a, Op.READ, "anything") and can(a, Op.READ, "*")
    assert not can(a, Op.READ, "anything", rtype=RT.GROUP)
    b = authorizer(acl("*", Op.READ, pattern=PT.PREFIXED))
    assert not can(b, Op.READ, "anything") and can(b, Op.READ, "*star")


def test_deny_beats_allow() -> None:
    """Any matching DENY denies, however many ALLOWs match: a literal DENY under a wildcard ALLOW, a
    PREFIXED DENY over a literal ALLOW, a wildcard DENY over everything."""
    a = authorizer(acl("*", Op.READ), acl("secret", Op.READ, DENY))
    assert can(a, Op.READ, "public") and not can(a, Op.READ, "secret")
    b = authorizer(acl("orders", Op.WRITE), acl("ord", Op.WRITE, DENY, pattern=PT.PREFIXED))
    assert not can(b, Op.WRITE, "orders")
    c = authorizer(acl("orders", Op.ALL), acl("*", Op.ALL, DENY, WILDCARD_PRINCIPAL))
    assert not can(c, Op.READ, "orders")


def test_allow_implies_describe_and_describe_configs() -> None:
    """An ALLOW of READ, WRITE, DELETE or ALTER also allows DESCRIBE; ALTER_CONFIGS allows DESCRIBE_CONFIGS;
    ALL allows every operation. Nothing else is implied (CREATE does not give DESCRIBE, READ not WRITE,
    ALTER not ALTER_CONFIGS)."""
    for op in (Op.READ, Op.WRITE, Op.DELETE, Op.ALTER):
        assert can(authorizer(acl(op=op)), Op.DESCRIBE), op
    assert not can(authorizer(acl(op=Op.CREATE)), Op.DESCRIBE)
    assert not can(authorizer(acl(op=Op.READ)), Op.WRITE)
    assert not can(authorizer(acl(op=Op.ALTER)), Op.ALTER_CONFIGS)
    assert can(authorizer(acl(op=Op.ALTER_CONFIGS)), Op.DESCRIBE_CONFIGS)
    assert not can(authorizer(acl(op=Op.DESCRIBE_CONFIGS)), Op.ALTER_CONFIGS)
    everything = authorizer(acl(op=Op.ALL))
    assert all(can(everything, op) for op in ACL_OPERATIONS)


def test_deny_applies_only_to_its_own_operation_or_all() -> None:
    """StandardAuthorizerData applies the implications to ALLOW ACLs only: a DENY of READ leaves DESCRIBE
    allowed, a DENY of DESCRIBE leaves READ allowed; only a DENY of ALL denies everything."""
    a = authorizer(acl(op=Op.ALL), acl(op=Op.READ, perm=DENY))
    assert not can(a, Op.READ) and can(a, Op.DESCRIBE) and can(a, Op.WRITE)
    b = authorizer(acl(op=Op.READ), acl(op=Op.DESCRIBE, perm=DENY))
    assert can(b, Op.READ) and not can(b, Op.DESCRIBE)
    c = authorizer(acl(op=Op.ALL), acl(op=Op.ALL, perm=DENY))
    assert not any(can(c, op) for op in ACL_OPERATIONS)
    assert implied_operations(Op.READ) == {Op.READ, Op.DESCRIBE}
    assert implied_operations(Op.READ, DENY) == {Op.READ}
    assert implied_operations(Op.ALTER_CONFIGS) == {Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS}
    assert implied_operations(Op.ALL, DENY) == ACL_OPERATIONS
    with pytest.raises(ValueError):
        implied_operations(Op.ANY)


def test_host_must_equal_or_be_wildcard() -> None:
    """An ACL's host matches the client's address exactly or is ``*``; a DENY for one host leaves others
    allowed."""
    a = authorizer(acl(op=Op.READ, host="10.0.0.1"))
    assert can(a, Op.READ, host="10.0.0.1") and not can(a, Op.READ, host="10.0.0.2")
    b = authorizer(acl(op=Op.READ), acl(op=Op.READ, perm=DENY, host="10.0.0.9"))
    assert can(b, Op.READ, host="10.0.0.1") and not can(b, Op.READ, host="10.0.0.9")


def test_user_wildcard_principal_matches_everyone() -> None:
    """``User:*`` ACLs apply to every principal (whatever its type); other principals match exactly."""
    a = authorizer(acl(op=Op.READ, principal=WILDCARD_PRINCIPAL))
    assert can(a, Op.READ, principal=BOB) and can(a, Op.READ, principal="Group:ops")
    b = authorizer(acl(op=Op.READ, principal=ALICE))
    assert not can(b, Op.READ, principal=BOB) and not can(b, Op.READ, principal="User:Alice")


def test_super_users_are_always_allowed() -> None:
    """A principal listed in super.users is allowed everything, DENY ACLs and missing ACLs regardless;
    super.users is split on ';' with entries trimmed and empty ones skipped; an entry without a colon is a
    configuration error."""
    a = authorizer(acl("*", Op.ALL, DENY, WILDCARD_PRINCIPAL), super_users=("User:admin",))
    assert can(a, Op.ALTER, principal="User:admin") and not can(a, Op.READ)
    assert can(authorizer(super_users=("User:admin",)), Op.READ, principal="User:admin")
    assert parse_super_users(" User:admin ; ;User:CN=ops,O=x;") == {"User:admin", "User:CN=ops,O=x"}
    assert parse_super_users(None) == frozenset()
    configured = authorizer_from_settings("User:admin;User:root", allow_everyone=True)
    assert configured.super_users == {"User:admin", "User:root"} and configured.allow_everyone_if_no_acl_found
    with pytest.raises(ConfigError, match="super.users"):
        parse_super_users("User:admin;admin")


def test_allow_everyone_if_no_acl_found_applies_only_without_resource_acls() -> None:
    """allow.everyone.if.no.acl.found allows when no ACL at all applies to the resource (ACLs on other
    resources do not count); once any ACL applies to it, for whatever principal, host or operation,
    unmatched requests are denied. Without the setting, no ACLs means denied."""
    elsewhere = authorizer(acl("other", Op.READ, principal=BOB), allow_everyone=True)
    assert can(elsewhere, Op.WRITE, "orders")
    on_this = authorizer(acl("orders", Op.READ, principal=BOB), allow_everyone=True)
    assert not can(on_this, Op.WRITE, "orders") and not can(on_this, Op.READ, "orders")
    via_prefix = authorizer(acl("ord", Op.READ, principal=BOB, pattern=PT.PREFIXED), allow_everyone=True)
    assert not can(via_prefix, Op.READ, "orders") and can(via_prefix, Op.READ, "xorders")
    via_wildcard = authorizer(acl("*", Op.CREATE, principal=BOB, host="10.9.9.9"), allow_everyone=True)
    assert not can(via_wildcard, Op.READ, "orders")
    assert not can(authorizer(acl("other", Op.READ)), Op.READ, "orders")
    assert not can(authorizer(), Op.READ, "orders")


def test_add_is_idempotent_and_refuses_invalid_bindings() -> None:
    """Adding an ACL already present reports False and changes nothing; a binding Kafka would not create
    never enters the authorizer."""
    a = authorizer(acl())
    assert a.add(acl()) is False and len(a) == 1 and a.bindings() == [acl()]
    with pytest.raises(ValueError, match="patternType must not be MATCH"):
        a.add(acl(pattern=PT.MATCH))


def test_describe_filters_with_any_match_and_exact_fields() -> None:
    """DescribeAcls filters: ANY/None match every value; LITERAL/PREFIXED (and ANY) with a name match that
    exact stored name; MATCH matches the literal name, the literal wildcard and every prefix ACL starting
    the name; principal and host compare exactly, ``User:*`` included."""
    lit = acl("orders")
    wild = acl("*", principal=WILDCARD_PRINCIPAL)
    pre = acl("ord", pattern=PT.PREFIXED, host="10.0.0.1")
    pre_same = acl("orders", pattern=PT.PREFIXED, op=Op.WRITE, perm=DENY)
    other = acl("payments", principal=BOB)
    group = acl("orders", rtype=RT.GROUP)
    a = authorizer(lit, wild, pre, pre_same, other, group)
    assert a.describe(AclBindingFilter()) == [lit, wild, pre, pre_same, other, group]
    assert a.describe(AclBindingFilter(RT.TOPIC, "orders", PT.MATCH)) == [lit, wild, pre, pre_same]
    assert a.describe(AclBindingFilter(RT.TOPIC, "orders", PT.LITERAL)) == [lit]
    assert a.describe(AclBindingFilter(RT.TOPIC, "orders", PT.PREFIXED)) == [pre_same]
    assert a.describe(AclBindingFilter(RT.ANY, "orders", PT.ANY)) == [lit, pre_same, group]
    assert a.describe(AclBindingFilter(RT.TOPIC, None, PT.PREFIXED)) == [pre, pre_same]
    assert a.describe(AclBindingFilter(principal=ALICE, host="*")) == [lit, pre_same, group]
    assert a.describe(AclBindingFilter(principal=WILDCARD_PRINCIPAL)) == [wild]
    assert a.describe(AclBindingFilter(operation=Op.WRITE, permission_type=DENY)) == [pre_same]
    assert a.describe(AclBindingFilter(resource_type=None, pattern_type=None)) == a.bindings()  # type: ignore[arg-type]
    assert a.describe(AclBindingFilter(RT.UNKNOWN)) == []


def test_delete_removes_matching_acls_and_their_effect() -> None:
    """DeleteAcls removes every ACL the filter matches and returns them; the decisions they made go with
    them (back to the no-ACL default)."""
    keep = acl("payments")
    gone = [acl("orders"), acl("ord", pattern=PT.PREFIXED), acl("*", Op.WRITE)]
    a = authorizer(*gone, keep, allow_everyone=True)
    assert not can(a, Op.DELETE, "orders")
    assert a.remove_matching(AclBindingFilter(RT.TOPIC, "orders", PT.MATCH)) == gone
    assert a.bindings() == [keep]
    assert can(a, Op.DELETE, "orders")
    assert a.remove_matching(AclBindingFilter(RT.TOPIC, "orders", PT.MATCH)) == []
    assert a.remove_matching(keep.to_filter()) == [keep] and len(a) == 0


def test_binding_validation_gives_kafkas_errors() -> None:
    """CreateAcls refusals as Kafka 4.0 answers them: UNKNOWN values INVALID_REQUEST; ANY/MATCH values
    UNKNOWN_SERVER_ERROR (the Java constructors throw); a CLUSTER not named kafka-cluster, an empty name and
    a principal without a colon INVALID_REQUEST. Hosts and odd principals like ``User:`` are accepted."""
    invalid = ErrorCode.INVALID_REQUEST
    server = ErrorCode.UNKNOWN_SERVER_ERROR
    cases = [
        (acl(rtype=RT.UNKNOWN), invalid, "unknown elements"),
        (acl(pattern=PT.UNKNOWN), invalid, "unknown elements"),
        (acl(op=Op.UNKNOWN), invalid, "unknown elements"),
        (acl(perm=AclPermissionType.UNKNOWN), invalid, "unknown elements"),
        (acl(rtype=RT.ANY), server, "resourceType must not be ANY"),
        (acl(pattern=PT.ANY), server, "patternType must not be ANY"),
        (acl(pattern=PT.MATCH), server, "patternType must not be MATCH"),
        (acl(op=Op.ANY), server, "operation must not be ANY"),
        (acl(perm=AclPermissionType.ANY), server, "permissionType must not be ANY"),
        (acl("my-cluster", rtype=RT.CLUSTER), invalid, "only valid name for the CLUSTER resource is kafka-cluster"),
        (acl("", rtype=RT.CLUSTER), invalid, "only valid name for the CLUSTER resource"),
        (acl(""), invalid, "Invalid empty resource name"),
        (acl(principal="alice"), invalid, "Could not parse principal from `alice`"),
    ]
    for binding, code, text in cases:
        problem = binding.validate()
        assert problem is not None and problem[0] is code and text in problem[1], (binding, problem)
    assert acl(rtype=RT.UNKNOWN).is_unknown() and not acl().is_unknown()
    for ok in (acl(), acl("kafka-cluster", Op.ALTER, rtype=RT.CLUSTER), acl(principal="User:"),
               acl(host="not-an-ip"), acl("x", pattern=PT.PREFIXED, op=Op.CREATE_TOKENS, rtype=RT.GROUP)):
        assert ok.validate() is None, ok


def test_filter_validation_and_indefinite_fields() -> None:
    """DeleteAcls filter checks: UNKNOWN values are INVALID_REQUEST (pattern part first). Kafka's
    findIndefiniteField names the first ANY/UNKNOWN/null field, in its order, and leaves pattern type ANY
    out; matchesAtMostOne is its absence."""
    assert AclBindingFilter(RT.UNKNOWN).validate() == (ErrorCode.INVALID_REQUEST, "Unknown patternFilter.")
    assert AclBindingFilter(operation=Op.UNKNOWN).validate() == (ErrorCode.INVALID_REQUEST, "Unknown entryFilter.")
    assert AclBindingFilter().validate() is None and AclBindingFilter(pattern_type=PT.UNKNOWN).is_unknown()
    assert AclBindingFilter().find_indefinite_field() == "Resource type is ANY."
    exact = acl().to_filter()
    assert exact.find_indefinite_field() is None and exact.matches_at_most_one()
    steps = [({"resource_name": None}, "Resource name is NULL."),
             ({"pattern_type": PT.MATCH}, "Resource pattern type is MATCH."),
             ({"principal": None}, "Principal is NULL"), ({"host": None}, "Host is NULL"),
             ({"operation": Op.ANY}, "Operation is ANY"), ({"permission_type": AclPermissionType.ANY},
                                                           "Permission type is ANY")]
    for change, text in steps:
        flt = AclBindingFilter(**{**exact.__dict__, **change})
        assert flt.find_indefinite_field() == text and not flt.matches_at_most_one()
    assert AclBindingFilter(**{**exact.__dict__, "pattern_type": PT.ANY}).matches_at_most_one()


def test_authorized_operations_and_bit_field() -> None:
    """authorized_operations decides each candidate as authorize would (default candidates: Kafka's
    supported operations of the resource type); bit_field sets bit i for operation code i, as Kafka's
    to32BitField does for the authorized-operations fields."""
    a = authorizer(acl("orders", Op.READ), acl("orders", Op.ALTER_CONFIGS), acl("orders", Op.DELETE, DENY))
    ops = a.authorized_operations(ALICE, HOST, RT.TOPIC, "orders")
    assert ops == {Op.READ, Op.DESCRIBE, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS}
    assert bit_field(ops) == (1 << 3) | (1 << 8) | (1 << 11) | (1 << 10) == 3336
    assert a.authorized_operations(ALICE, HOST, RT.TOPIC, "orders", [Op.READ, Op.WRITE]) == {Op.READ}
    assert a.authorized_operations(BOB, HOST, RT.TOPIC, "orders") == set()
    admin = authorizer(super_users=("User:admin",))
    assert admin.authorized_operations("User:admin", HOST, RT.GROUP, "g") == SUPPORTED_OPERATIONS[RT.GROUP]
    open_broker = authorizer(allow_everyone=True)
    assert open_broker.authorized_operations(BOB, HOST, RT.CLUSTER, "kafka-cluster") == \
        SUPPORTED_OPERATIONS[RT.CLUSTER]
    assert bit_field([]) == 0 and bit_field([Op.DESCRIBE_TOKENS]) == 1 << 14
    assert bit_field(SUPPORTED_OPERATIONS[RT.TOPIC]) == sum(1 << op for op in SUPPORTED_OPERATIONS[RT.TOPIC])


def test_authorize_any_follows_authorize_by_resource_type() -> None:
    """Kafka's authorizeByResourceType: allowed if the probe resource "hardcode" is allowed (super users,
    wildcard ALLOW, allow.everyone.if.no.acl.found); otherwise if some LITERAL ALLOW survives LITERAL DENYs
    of its name and PREFIXED DENYs of its prefixes, or some PREFIXED ALLOW survives PREFIXED DENYs of its
    prefixes. A wildcard DENY denies; only the exact operation or ALL counts (no implied DESCRIBE)."""
    any_write = "User:alice", HOST, Op.WRITE, RT.TRANSACTIONAL_ID

    def txn(name: str, perm: AclPermissionType = ALLOW, pattern: PatternType = PT.LITERAL,
            op: AclOperation = Op.WRITE) -> AclBinding:
        return acl(name, op, perm, pattern=pattern, rtype=RT.TRANSACTIONAL_ID)

    assert not authorizer().authorize_any(*any_write)
    assert authorizer(allow_everyone=True).authorize_any(*any_write)
    assert authorizer(super_users=(ALICE,)).authorize_any(*any_write)
    assert authorizer(txn("*")).authorize_any(*any_write)
    assert authorizer(txn("app-1")).authorize_any(*any_write)
    assert authorizer(txn("app", pattern=PT.PREFIXED)).authorize_any(*any_write)
    assert authorizer(txn("app-1", op=Op.ALL)).authorize_any(*any_write)
    assert not authorizer(txn("app-1", op=Op.READ)).authorize_any(*any_write)
    assert not authorizer(txn("app-1", op=Op.WRITE)).authorize_any(ALICE, HOST, Op.DESCRIBE, RT.TRANSACTIONAL_ID)
    assert not authorizer(txn("app-1"), txn("app-1", DENY)).authorize_any(*any_write)
    assert not authorizer(txn("app-1"), txn("app", DENY, PT.PREFIXED)).authorize_any(*any_write)
    assert authorizer(txn("app-1"), txn("app-10", DENY, PT.PREFIXED)).authorize_any(*any_write)
    assert authorizer(txn("app", pattern=PT.PREFIXED), txn("app", DENY)).authorize_any(*any_write)
    assert not authorizer(txn("app-", pattern=PT.PREFIXED), txn("app", DENY, PT.PREFIXED)).authorize_any(*any_write)
    assert not authorizer(txn("app-1"), txn("*", DENY)).authorize_any(*any_write)
    assert not authorizer(txn("app-1", op=Op.WRITE)).authorize_any(BOB, HOST, Op.WRITE, RT.TRANSACTIONAL_ID)
    host_bound = acl("app-1", Op.WRITE, host="10.9.9.9", rtype=RT.TRANSACTIONAL_ID)
    assert not authorizer(host_bound).authorize_any(*any_write)
    # The probe is a real resource name: a PREFIXED DENY of "hard" denies it, yet other ALLOWs still count.
    assert authorizer(txn("*"), txn("hard", DENY, PT.PREFIXED)).authorize_any(*any_write)
    with pytest.raises(ValueError):
        authorizer().authorize_any(ALICE, HOST, Op.ANY, RT.TOPIC)
    with pytest.raises(ValueError):
        authorizer().authorize_any(ALICE, HOST, Op.READ, RT.ANY)


def _reference_decision(bindings: list[AclBinding], principal: str, host: str, op: AclOperation,
                        rtype: ResourceType, name: str, allow_everyone: bool) -> bool:
    applicable = [b for b in bindings if b.resource_type == rtype and (
        (b.pattern_type is PT.LITERAL and b.resource_name in (name, "*"))
        or (b.pattern_type is PT.PREFIXED and name.startswith(b.resource_name)))]
    if not applicable:
        return allow_everyone
    matching = [b for b in applicable if b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, "*")
                and op in implied_operations(b.operation, b.permission_type)]
    if any(b.permission_type is DENY for b in matching):
        return False
    return bool(matching)


def test_indexed_decisions_equal_a_full_scan() -> None:
    """The literal/prefix indexes decide exactly as scanning every ACL with StandardAuthorizer's rules
    would, through random additions and deletions (so the indexes also stay right when ACLs leave)."""
    rng = random.Random(1234)
    names = ["a", "ab", "abc", "abd", "b", "*", "ba"]
    principals = [ALICE, BOB, WILDCARD_PRINCIPAL]
    hosts = ["*", "10.0.0.1", "10.0.0.2"]
    ops = [Op.READ, Op.WRITE, Op.DESCRIBE, Op.ALL, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS]
    for allow_everyone in (False, True):
        a = Authorizer(allow_everyone_if_no_acl_found=allow_everyone)
        for _ in range(300):
            binding = acl(rng.choice(names), rng.choice(ops), rng.choice([ALLOW, DENY]), rng.choice(principals),
                          pattern=rng.choice([PT.LITERAL, PT.PREFIXED]), host=rng.choice(hosts),
                          rtype=rng.choice([RT.TOPIC, RT.GROUP]))
            if rng.random() < 0.25:
                a.remove_matching(AclBindingFilter(binding.resource_type, rng.choice(names), PT.MATCH,
                                                   principal=binding.principal))
            else:
                a.add(binding)
            for _ in range(5):
                query = (rng.choice([ALICE, BOB]), rng.choice(hosts[1:]), rng.choice(ops[:3] + ops[4:]),
                         rng.choice([RT.TOPIC, RT.GROUP]), rng.choice(names + ["abcd", "c", ""]))
                assert a.authorize(*query) == _reference_decision(a.bindings(), *query, allow_everyone), query


def test_store_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    """Saved bindings load back equal and in order (duplicates dropped); the file is replaced through a tmp
    file that does not linger, and is readable by its owner only."""
    path = tmp_path / "acls.json"
    store = AclStore(path)
    assert store.load() == []
    bindings = [acl(), acl("ord", Op.ALL, DENY, WILDCARD_PRINCIPAL, pattern=PT.PREFIXED, host="10.0.0.1"),
                acl("kafka-cluster", Op.IDEMPOTENT_WRITE, rtype=RT.CLUSTER)]
    store.save(bindings + [acl()])
    assert AclStore(path).load() == bindings
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "acls.json.tmp").exists()
    assert json.loads(path.read_text())["acls"][1]["operation"] == "ALL"
    store.save([])
    assert store.load() == []
    memory = AclStore(None)
    memory.save(bindings)
    assert memory.load() == []
    path.write_text(_document_with())  # the baseline the corrupt-file cases below each break in one way
    assert store.load() == [acl("t", principal="User:a")]


_GOOD_ENTRY = {"resource_type": "TOPIC", "resource_name": "t", "pattern_type": "LITERAL", "principal": "User:a",
               "host": "*", "operation": "READ", "permission_type": "ALLOW"}


def _document_with(**change: object) -> str:
    return json.dumps({"version": 1, "acls": [{**_GOOD_ENTRY, **change}]})


@pytest.mark.parametrize("text", [
    "{not json",
    "[]",
    '{"version": 2, "acls": []}',
    '{"version": 1, "acls": [{"resource_type": "TOPIC"}]}',
    _document_with(resource_type="NOPE"),
    _document_with(pattern_type="MATCH"),
    _document_with(resource_name=7),
    _document_with(principal="nocolon"),
    _document_with(extra="field"),
])
def test_store_refuses_a_corrupt_file(tmp_path: Path, text: str) -> None:
    """A file that is not the store's JSON, or holds an ACL Kafka would not create, raises ValueError naming
    the file: loading no ACLs instead would silently change every decision."""
    path = tmp_path / "acls.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)):
        AclStore(path).load()
