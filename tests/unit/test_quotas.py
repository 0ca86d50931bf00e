"""Client quotas as a pure manager: Kafka's precedence and metric sharing (ClientQuotaManager), the rate and
throttle arithmetic (Rate, SampledStat, QuotaUtils, ClientRequestQuotaManager), DescribeClientQuotas
filters (ClientQuotasImage.describe), AlterClientQuotas validation (ClientQuotaControlManager), and the
quota file. Time is passed in; each test names the Kafka behaviour it checks."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from broker.quotas import (
    CLIENT_ID,
    CONNECTION_CREATION_RATE,
    CONSUMER_BYTE_RATE,
    CONTROLLER_MUTATION_RATE,
    IP,
    MATCH_ANY,
    MATCH_DEFAULT,
    MATCH_EXACT,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    ClientQuotas,
    QuotaError,
)
from protocol.errors import ErrorCode
from storage.file.fs import FaultInjectingFileSystem

OK = (ErrorCode.NONE, None)


class FakeClock:
    """Seconds, like time.monotonic, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0


def new_quotas(path: Path | None = None, **kwargs: object) -> tuple[ClientQuotas, FakeClock]:
    clock = FakeClock()
    return ClientQuotas(path, clock=clock, **kwargs), clock  # type: ignore[arg-type]


def set_quota(quotas: ClientQuotas, entity: list[tuple[str, str | None]], **values: float) -> None:
    result = quotas.alter([(entity, [(key, value, False) for key, value in values.items()])], validate_only=False)
    assert result == [OK], f"setting {values} on {entity} failed: {result}"


def remove_quota(quotas: ClientQuotas, entity: list[tuple[str, str | None]], *keys: str) -> None:
    result = quotas.alter([(entity, [(key, 0.0, True) for key in keys])], validate_only=False)
    assert result == [OK], f"removing {keys} from {entity} failed: {result}"


def steady(quotas: ClientQuotas, clock: FakeClock, key: str, user: str, client_id: str, per_second: float,
           seconds: int, step_ms: int = 100) -> list[int]:
    """Record `per_second` spread evenly over `seconds`; the throttle time of every record."""
    throttles = []
    for _ in range(seconds * 1000 // step_ms):
        throttles.append(quotas.record(key, user, client_id, per_second * step_ms / 1000))
        clock.advance_ms(step_ms)
    return throttles


# --- precedence and metric tags -------------------------------------------------------------------------


def test_precedence_walks_all_eight_levels_most_specific_first() -> None:
    """ClientQuotaManager's order: /users/u/clients/c, /users/u/clients/<default>, /users/u,
    /users/<default>/clients/c, /users/<default>/clients/<default>, /users/<default>, /clients/c,
    /clients/<default>; each level charges the metric tagged as Kafka tags it."""
    quotas, _ = new_quotas()
    levels: list[tuple[list[tuple[str, str | None]], tuple[str, str]]] = [
        ([(USER, "alice"), (CLIENT_ID, "app")], ("alice", "app")),
        ([(USER, "alice"), (CLIENT_ID, None)], ("alice", "app")),
        ([(USER, "alice")], ("alice", "")),
        ([(USER, None), (CLIENT_ID, "app")], ("alice", "app")),
        ([(USER, None), (CLIENT_ID, None)], ("alice", "app")),
        ([(USER, None)], ("alice", "")),
        ([(CLIENT_ID, "app")], ("", "app")),
        ([(CLIENT_ID, None)], ("", "app")),
    ]
    for rank, (entity, _) in enumerate(levels, start=1):
        set_quota(quotas, entity, producer_byte_rate=rank * 1000)
    for rank, (entity, tags) in enumerate(levels, start=1):
        assert quotas.quota("alice", "app", PRODUCER_BYTE_RATE) == (rank * 1000, tags), f"level {rank} {entity}"
        remove_quota(quotas, entity, PRODUCER_BYTE_RATE)  # also proves the resolution cache is invalidated
    assert quotas.quota("alice", "app", PRODUCER_BYTE_RATE) is None


def test_precedence_is_per_quota_key() -> None:
    """Kafka runs one quota manager per quota type: a user-level producer quota does not hide a client-level
    consumer quota."""
    quotas, _ = new_quotas()
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000)
    set_quota(quotas, [(CLIENT_ID, None)], consumer_byte_rate=2000)
    assert quotas.quota("alice", "app", PRODUCER_BYTE_RATE) == (1000, ("alice", ""))
    assert quotas.quota("alice", "app", CONSUMER_BYTE_RATE) == (2000, ("", "app"))
    assert quotas.quota("bob", "app", PRODUCER_BYTE_RATE) is None
    assert quotas.quota("alice", "app", REQUEST_PERCENTAGE) is None


def test_default_user_quota_gives_each_user_their_own_budget() -> None:
    """A /users/<default> quota is per user (metric tags (user, "")): bob staying within it is not throttled
    for alice going over it."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(USER, None)], producer_byte_rate=1000)
    assert quotas.quota("alice", "a", PRODUCER_BYTE_RATE) == (1000, ("alice", ""))
    assert quotas.quota("bob", "b", PRODUCER_BYTE_RATE) == (1000, ("bob", ""))
    alice, bob = [], []
    for _ in range(200):  # 20 s: alice at 2x, bob at 0.5x
        alice.append(quotas.record(PRODUCER_BYTE_RATE, "alice", "a", 200))
        bob.append(quotas.record(PRODUCER_BYTE_RATE, "bob", "b", 50))
        clock.advance_ms(100)
    assert alice[-1] > 0, "alice at twice her quota should be throttled"
    assert max(bob) == 0, f"bob within his own quota was throttled: {max(bob)} ms"


def test_client_ids_of_a_user_share_the_user_quota() -> None:
    """Under /users/alice every client id of alice is charged to one metric (alice, ""): two clients at 0.6x
    each are 1.2x together and get throttled."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000)
    throttles = []
    for _ in range(200):
        throttles.append(quotas.record(PRODUCER_BYTE_RATE, "alice", "one", 60))
        throttles.append(quotas.record(PRODUCER_BYTE_RATE, "alice", "two", 60))
        clock.advance_ms(100)
    assert throttles[-1] > 0 and throttles[-2] > 0, f"shared quota not enforced: {throttles[-2:]}"


def test_default_client_quota_is_per_client_id() -> None:
    """A /clients/<default> quota is per client id (tags ("", client)): two client ids at 0.6x each stay
    within their own quotas."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(CLIENT_ID, None)], consumer_byte_rate=1000)
    throttles = []
    for _ in range(200):
        throttles.append(quotas.record(CONSUMER_BYTE_RATE, "alice", "one", 60))
        throttles.append(quotas.record(CONSUMER_BYTE_RATE, "alice", "two", 60))
        clock.advance_ms(100)
    assert max(throttles) == 0, f"independent client ids were throttled: {max(throttles)} ms"


# --- rate and throttle arithmetic ------------------------------------------------------------------------


def test_steady_twice_the_quota_throttles_about_one_full_window() -> None:
    """QuotaUtils.throttleTime: (rate - bound) / bound * window. At 2x the bound the delay is the measured
    window itself: between window_num and window_num + 1 windows (11 to 12 s by default)."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000)
    throttles = steady(quotas, clock, PRODUCER_BYTE_RATE, "alice", "app", 2000, seconds=40)
    settled = throttles[-100:]  # the last 10 s, long after the first window filled
    assert 11_000 <= min(settled) and max(settled) <= 12_000, f"expected 11 to 12 s, got {min(settled)}..{max(settled)}"


def test_within_quota_is_never_throttled() -> None:
    """Sensor.checkQuotas: a rate at or under the bound is acceptable; nothing is throttled, burst-free
    traffic at 0.9x included."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(CLIENT_ID, "app")], producer_byte_rate=1000)
    throttles = steady(quotas, clock, PRODUCER_BYTE_RATE, "alice", "app", 900, seconds=40)
    assert max(throttles) == 0, f"throttled within quota: {max(throttles)} ms"


def test_byte_rate_spike_matches_kafkas_arithmetic() -> None:
    """Kafka's Rate counts the window from the oldest sample: 400 B/s for 10 s, then 2300 B half a second
    later is 6300 B over 10.5 s = 600 B/s against 500, a throttle of (600-500)/500*10500 = 2100 ms. The
    byte-rate throttle is not capped at a window (ClientQuotaManager uses the uncapped throttleTime)."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(CLIENT_ID, "app")], producer_byte_rate=500)
    for _ in range(10):
        assert quotas.record(PRODUCER_BYTE_RATE, "u", "app", 400) == 0
        clock.advance_ms(1000)
    clock.advance_ms(500 - 1000)
    assert quotas.record(PRODUCER_BYTE_RATE, "u", "app", 2300) == 2100


def test_request_percentage_matches_kafkas_request_quota_test() -> None:
    """request_percentage=1 is 10 ms of handling per second. Kafka's ClientRequestQuotaManagerTest: 4 ms a
    second for 10 s, then 67.1 ms half a second later: 107.1 ms / 10.5 s = 10.2 ms/s, throttle
    (10.2-10)/10*10500 = 210 ms."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(USER, "ANONYMOUS"), (CLIENT_ID, "test-client")], request_percentage=1)
    for _ in range(10):
        assert quotas.record(REQUEST_PERCENTAGE, "ANONYMOUS", "test-client", 4) == 0
        clock.advance_ms(1000)
    clock.advance_ms(-500)
    assert quotas.record(REQUEST_PERCENTAGE, "ANONYMOUS", "test-client", 67.1) == 210


def test_request_percentage_throttle_is_capped_at_one_window() -> None:
    """ClientRequestQuotaManager bounds its throttle at quota.window.size.seconds: a huge handler time
    throttles one window, not the full overshoot."""
    quotas, _ = new_quotas(window_size_ms=1000)
    set_quota(quotas, [(USER, None)], request_percentage=10)
    assert quotas.record(REQUEST_PERCENTAGE, "alice", "app", 60_000) == 1000


def test_byte_rate_throttle_is_clamped_to_int32() -> None:
    """The response's throttle_time_ms is an int32: an absurd overshoot gives its maximum, not a wrapped
    value (Kafka's cast of a long to int would wrap)."""
    quotas, _ = new_quotas()
    set_quota(quotas, [(USER, None)], producer_byte_rate=1)
    assert quotas.record(PRODUCER_BYTE_RATE, "alice", "app", 1e12) == 2**31 - 1


def test_samples_older_than_the_window_stop_counting() -> None:
    """SampledStat.purgeObsoleteSamples: after window_num windows without a record, a past burst no longer
    counts and the client is served unthrottled."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000)
    assert quotas.record(PRODUCER_BYTE_RATE, "alice", "app", 30_000) > 0
    clock.advance_ms(11_000)
    assert quotas.record(PRODUCER_BYTE_RATE, "alice", "app", 100) == 0


def test_unrecord_takes_back_a_throttled_fetch() -> None:
    """Kafka unrecords a throttled fetch's bytes (it answers empty): afterwards the rate is what it was."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(USER, "alice")], consumer_byte_rate=1000)
    assert quotas.record(CONSUMER_BYTE_RATE, "alice", "app", 5000) == 0
    clock.advance_ms(100)
    assert quotas.record(CONSUMER_BYTE_RATE, "alice", "app", 20_000) > 0
    quotas.unrecord(CONSUMER_BYTE_RATE, "alice", "app", 20_000)
    assert quotas.record(CONSUMER_BYTE_RATE, "alice", "app", 100) == 0


def test_max_value_in_window_is_bound_times_full_windows() -> None:
    """ClientQuotaManager.maxValueInQuotaWindow: bound * (window_num - 1) * window size; unlimited without
    a quota."""
    quotas, _ = new_quotas()
    set_quota(quotas, [(CLIENT_ID, None)], consumer_byte_rate=1000)
    assert quotas.max_value_in_window(CONSUMER_BYTE_RATE, "alice", "app") == 10_000
    assert quotas.max_value_in_window(PRODUCER_BYTE_RATE, "alice", "app") is None


def test_record_without_a_quota_is_free_and_unknown_keys_are_refused() -> None:
    """No quota applies: throttle 0 and no metric kept (Kafka's quota is unlimited). Recording a key that is
    not a per-request rate is a programming error."""
    quotas, _ = new_quotas()
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000)
    assert quotas.record(PRODUCER_BYTE_RATE, "bob", "app", 10**9) == 0
    assert quotas.tracked_metrics == 0
    with pytest.raises(ValueError, match="controller_mutation_rate"):
        quotas.record(CONTROLLER_MUTATION_RATE, "alice", "app", 1)


def test_idle_metrics_are_dropped() -> None:
    """Metrics whose samples are all obsolete carry nothing and are dropped, so random client ids under
    /clients/<default> do not accumulate."""
    quotas, clock = new_quotas()
    set_quota(quotas, [(CLIENT_ID, None)], producer_byte_rate=1000)
    for i in range(1000):
        quotas.record(PRODUCER_BYTE_RATE, "u", f"random-{i}", 10)
    assert quotas.tracked_metrics == 1000
    clock.advance_ms(11_000)
    for _ in range(200):
        quotas.record(PRODUCER_BYTE_RATE, "u", "steady", 10)
        clock.advance_ms(10)
    assert quotas.tracked_metrics == 1, f"idle metrics kept: {quotas.tracked_metrics}"


def test_metric_count_is_capped_and_active_clients_keep_their_accounting() -> None:
    """At max_metrics the least recently recorded metric goes: a flood of new client ids within one window
    stays bounded and a busy client's rate survives it."""
    quotas, clock = new_quotas(max_metrics=100)
    set_quota(quotas, [(CLIENT_ID, None)], producer_byte_rate=1000)
    assert quotas.record(PRODUCER_BYTE_RATE, "u", "busy", 30_000) > 0
    for i in range(1000):
        quotas.record(PRODUCER_BYTE_RATE, "u", f"random-{i}", 1)
        if i % 50 == 0:
            quotas.record(PRODUCER_BYTE_RATE, "u", "busy", 1)
    assert quotas.tracked_metrics == 100
    clock.advance_ms(100)
    assert quotas.record(PRODUCER_BYTE_RATE, "u", "busy", 1) > 0, "the busy client's rate was evicted"


# --- DescribeClientQuotas ----------------------------------------------------------------------------------


def described(quotas: ClientQuotas, components: list[tuple[str, int, str | None]], strict: bool) -> set[str]:
    return {",".join(f"{t}={n}" for t, n in sorted(entity.items())) for entity, _ in quotas.describe(components,
                                                                                                      strict)}


@pytest.fixture
def populated() -> ClientQuotas:
    quotas, _ = new_quotas()
    for entity in ([(USER, "alice")], [(USER, None)], [(USER, "alice"), (CLIENT_ID, "app")], [(CLIENT_ID, "app")],
                   [(CLIENT_ID, None)], [(USER, None), (CLIENT_ID, None)]):
        set_quota(quotas, entity, producer_byte_rate=1000)
    return quotas


@pytest.mark.parametrize(("components", "strict", "expected"), [
    ([(USER, MATCH_EXACT, "alice")], False, {"user=alice", "client-id=app,user=alice"}),
    ([(USER, MATCH_EXACT, "alice")], True, {"user=alice"}),
    ([(USER, MATCH_DEFAULT, None)], False, {"user=None", "client-id=None,user=None"}),
    ([(USER, MATCH_DEFAULT, None)], True, {"user=None"}),
    ([(USER, MATCH_ANY, None)], True, {"user=alice", "user=None"}),
    ([(USER, MATCH_ANY, None)], False, {"user=alice", "user=None", "client-id=app,user=alice",
                                        "client-id=None,user=None"}),
    ([(USER, MATCH_ANY, None), (CLIENT_ID, MATCH_ANY, None)], True, {"client-id=app,user=alice",
                                                                     "client-id=None,user=None"}),
    ([(USER, MATCH_DEFAULT, None), (CLIENT_ID, MATCH_DEFAULT, None)], True, {"client-id=None,user=None"}),
    ([(CLIENT_ID, MATCH_EXACT, "app")], True, {"client-id=app"}),
    ([(USER, MATCH_EXACT, "nobody")], False, set()),
    ([], False, {"user=alice", "user=None", "client-id=app,user=alice", "client-id=app", "client-id=None",
                 "client-id=None,user=None"}),
    ([], True, set()),
    ([(IP, MATCH_ANY, None)], False, set()),
])
def test_describe_filters(populated: ClientQuotas, components: list[tuple[str, int, str | None]], strict: bool,
                          expected: set[str]) -> None:
    """ClientQuotasImage.describe: EXACT matches a name, DEFAULT the <default> entity, ANY any entity of the
    type including the default; strict excludes entities with other types; no components is everything
    (nothing when strict); an ip filter is valid but finds no ip quotas."""
    assert described(populated, components, strict) == expected


def test_describe_returns_the_values() -> None:
    """Each entry carries the entity (None for <default>) and all its keys and values."""
    quotas, _ = new_quotas()
    set_quota(quotas, [(USER, None)], producer_byte_rate=1000, request_percentage=12.5)
    assert quotas.describe([(USER, MATCH_DEFAULT, None)], strict=True) == [
        ({USER: None}, {PRODUCER_BYTE_RATE: 1000.0, REQUEST_PERCENTAGE: 12.5})]


@pytest.mark.parametrize(("components", "code", "message"), [
    ([(USER, 3, None)], ErrorCode.INVALID_REQUEST, "Unknown match type 3"),
    ([(USER, MATCH_EXACT, None)], ErrorCode.INVALID_REQUEST, "MATCH_TYPE_EXACT, but set match string to null"),
    ([(USER, MATCH_DEFAULT, "x")], ErrorCode.INVALID_REQUEST, "MATCH_TYPE_DEFAULT, but also specified a match"),
    ([(USER, MATCH_ANY, "x")], ErrorCode.INVALID_REQUEST, "MATCH_TYPE_SPECIFIED, but also specified a match"),
    ([(USER, MATCH_ANY, None), (USER, MATCH_EXACT, "a")], ErrorCode.INVALID_REQUEST,
     "Entity type user cannot appear more than once in the filter."),
    ([("", MATCH_ANY, None)], ErrorCode.INVALID_REQUEST, "Invalid empty entity type."),
    ([("group", MATCH_ANY, None)], ErrorCode.UNSUPPORTED_VERSION, "Unsupported entity type group"),
    ([(IP, MATCH_ANY, None), (USER, MATCH_ANY, None)], ErrorCode.INVALID_REQUEST,
     "IP filter component should not be used with user or clientId"),
])
def test_describe_rejects_bad_filters(components: list[tuple[str, int, str | None]], code: ErrorCode,
                                      message: str) -> None:
    """Kafka's describe validation: each bad component raises its error code and message."""
    quotas, _ = new_quotas()
    with pytest.raises(QuotaError) as caught:
        quotas.describe(components, strict=False)
    assert caught.value.code is code and message in caught.value.message, (caught.value.code, caught.value.message)


def test_describe_stops_at_the_first_repeated_type_of_a_long_filter() -> None:
    """A filter of a million components costs no more than four: a fourth distinct valid type cannot exist."""
    quotas, _ = new_quotas()
    with pytest.raises(QuotaError, match="more than once"):
        quotas.describe([(USER, MATCH_ANY, None)] * 1_000_000, strict=False)


# --- AlterClientQuotas -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entity", "ops", "message"), [
    ([], [(PRODUCER_BYTE_RATE, 1000, False)], "Invalid empty client quota entity"),
    ([(USER, "a"), (USER, "b")], [(PRODUCER_BYTE_RATE, 1000, False)],
     "Invalid client quota entity, duplicate entity entry user"),
    ([("group", "g")], [(PRODUCER_BYTE_RATE, 1000, False)], "Unhandled client quota entity type: group"),
    ([(USER, "")], [(PRODUCER_BYTE_RATE, 1000, False)], "Empty user not supported"),
    ([(IP, "10.0.0.1"), (USER, "a")], [(CONNECTION_CREATION_RATE, 10, False)],
     "IP entity should not be combined with User or ClientId"),
    ([(IP, "10.0.0.1")], [(PRODUCER_BYTE_RATE, 1000, False)], "Invalid configuration key producer_byte_rate"),
    ([(IP, None)], [(CONNECTION_CREATION_RATE, 10, False)], "Unhandled client quota entity type: ip"),
    ([(IP, None)], [(CONNECTION_CREATION_RATE, 1.5, False)], "connection_creation_rate cannot be a fractional"),
    ([(USER, "a")], [(CONNECTION_CREATION_RATE, 10, False)], "Invalid configuration key connection_creation_rate"),
    ([(USER, "a")], [("unknown_rate", 10, False)], "Invalid configuration key unknown_rate"),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 0, False)], "Quota producer_byte_rate must be greater than 0"),
    ([(USER, "a")], [(REQUEST_PERCENTAGE, -1, False)], "Quota request_percentage must be greater than 0"),
    ([(USER, "a")], [(CONSUMER_BYTE_RATE, 1024.5, False)], "consumer_byte_rate cannot be a fractional value."),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 2.0**64, False)], "too large for a LONG."),
    ([(USER, "a")], [(REQUEST_PERCENTAGE, float("nan"), False)], "must be a finite number"),
    ([(USER, "a")], [(REQUEST_PERCENTAGE, float("inf"), False)], "must be a finite number"),
    ([(USER, "a")], [(PRODUCER_BYTE_RATE, 1000, False), (PRODUCER_BYTE_RATE, 0, True)],
     "Duplicate quota key producer_byte_rate not updating quota for this entity"),
])
def test_alter_rejects_invalid_entries(entity: list[tuple[str, str | None]], ops: list[tuple[str, float, bool]],
                                       message: str) -> None:
    """ClientQuotaControlManager's checks, each INVALID_REQUEST with Kafka's message; nothing is applied.
    ip entities are validated as Kafka does and then refused (Moldau has no per-IP connection quotas)."""
    quotas, _ = new_quotas()
    [(code, text)] = quotas.alter([(entity, ops)], validate_only=False)
    assert code is ErrorCode.INVALID_REQUEST and text is not None and message in text, (code, text)
    assert quotas.describe([], strict=False) == [] and not quotas.active


def test_alter_accepts_what_kafka_accepts() -> None:
    """Integral byte rates (given as doubles, within Kafka's 1e-6 tolerance), fractional request_percentage
    and controller_mutation_rate, entities given in either order, <default> names."""
    quotas, _ = new_quotas()
    results = quotas.alter([
        ([(CLIENT_ID, "app"), (USER, "alice")], [(PRODUCER_BYTE_RATE, 1024.0000001, False),
                                                 (REQUEST_PERCENTAGE, 12.5, False)]),
        ([(USER, None)], [(CONTROLLER_MUTATION_RATE, 0.5, False)]),
    ], validate_only=False)
    assert results == [OK, OK]
    assert quotas.quota("alice", "app", REQUEST_PERCENTAGE) == (12.5, ("alice", "app"))
    assert quotas.quota("bob", "x", CONTROLLER_MUTATION_RATE) == (0.5, ("bob", ""))


def test_alter_applies_valid_entries_and_reports_each() -> None:
    """Results are per entry: valid entries apply, invalid ones change nothing, and a second entry for the
    same entity is refused ("Ignoring duplicate entity")."""
    quotas, _ = new_quotas()
    results = quotas.alter([
        ([(USER, "alice")], [(PRODUCER_BYTE_RATE, 1000, False)]),
        ([(USER, "bob")], [(PRODUCER_BYTE_RATE, -5, False)]),
        ([(USER, "alice")], [(PRODUCER_BYTE_RATE, 2000, False)]),
        ([(CLIENT_ID, None)], [(CONSUMER_BYTE_RATE, 3000, False)]),
    ], validate_only=False)
    assert results[0] == OK and results[3] == OK
    assert results[1][0] is ErrorCode.INVALID_REQUEST
    assert results[2][0] is ErrorCode.INVALID_REQUEST and "Ignoring duplicate entity" in (results[2][1] or "")
    assert described(quotas, [], strict=False) == {"user=alice", "client-id=None"}
    assert quotas.quota("alice", "x", PRODUCER_BYTE_RATE) == (1000, ("alice", ""))
    assert quotas.quota("bob", "x", PRODUCER_BYTE_RATE) is None


def test_validate_only_reports_without_applying(tmp_path: Path) -> None:
    """validateOnly: the same per-entry results, no change in memory or on disk."""
    path = tmp_path / "quotas.json"
    quotas, _ = new_quotas(path)
    entries: list[tuple[list[tuple[str, str | None]], list[tuple[str, float, bool]]]] = [
        ([(USER, "alice")], [(PRODUCER_BYTE_RATE, 1000, False)]),
        ([(USER, "bob")], [(PRODUCER_BYTE_RATE, 0.5, False)]),
    ]
    results = quotas.alter(entries, validate_only=True)
    assert results[0] == OK and results[1][0] is ErrorCode.INVALID_REQUEST
    assert quotas.describe([], strict=False) == [] and not quotas.active
    assert not path.exists()


def test_removal_drops_keys_and_then_the_entity() -> None:
    """A removal op deletes the key (its value is ignored); an entity with no keys left disappears; removing
    a key that is not set succeeds and changes nothing."""
    quotas, _ = new_quotas()
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000, consumer_byte_rate=2000)
    remove_quota(quotas, [(USER, "alice")], PRODUCER_BYTE_RATE)
    assert quotas.describe([(USER, MATCH_EXACT, "alice")], strict=True) == [
        ({USER: "alice"}, {CONSUMER_BYTE_RATE: 2000.0})]
    remove_quota(quotas, [(USER, "alice")], REQUEST_PERCENTAGE)
    remove_quota(quotas, [(USER, "alice")], CONSUMER_BYTE_RATE)
    assert quotas.describe([], strict=False) == []
    remove_quota(quotas, [(USER, "nobody")], PRODUCER_BYTE_RATE)


def test_active_flips_with_the_configured_quotas() -> None:
    """The broker skips accounting while no quota is configured (Kafka's quotasEnabled)."""
    quotas, _ = new_quotas()
    assert not quotas.active
    quotas.alter([([(USER, None)], [(PRODUCER_BYTE_RATE, 1000, False)])], validate_only=True)
    assert not quotas.active
    set_quota(quotas, [(USER, None)], producer_byte_rate=1000)
    assert quotas.active
    remove_quota(quotas, [(USER, None)], PRODUCER_BYTE_RATE)
    assert not quotas.active


# --- the quota file ----------------------------------------------------------------------------------------


def test_quotas_survive_a_restart(tmp_path: Path) -> None:
    """The configured quotas persist (Kafka keeps them in its metadata log) in an owner-only file."""
    path = tmp_path / "quotas.json"
    quotas, _ = new_quotas(path)
    set_quota(quotas, [(USER, "alice"), (CLIENT_ID, None)], producer_byte_rate=1000, request_percentage=12.5)
    set_quota(quotas, [(CLIENT_ID, "app")], consumer_byte_rate=2048)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened, _ = new_quotas(path)
    reopened.load()
    assert reopened.describe([], strict=False) == quotas.describe([], strict=False)
    assert reopened.quota("alice", "x", PRODUCER_BYTE_RATE) == (1000, ("alice", "x"))


def test_missing_file_or_no_path_means_no_quotas(tmp_path: Path) -> None:
    """No file yet (first start) or memory-only: no quotas, no error; memory-only alters write nothing."""
    quotas, _ = new_quotas(tmp_path / "absent.json")
    quotas.load()
    assert not quotas.active
    memory, _ = new_quotas(None)
    memory.load()
    set_quota(memory, [(USER, None)], producer_byte_rate=1000)
    assert memory.active and os.listdir(tmp_path) == []


@pytest.mark.parametrize("content", [
    "not json",
    json.dumps({"version": 2, "quotas": []}),
    json.dumps({"version": 1, "quotas": [{"entity": {"user": "a"}}]}),
    json.dumps({"version": 1, "quotas": [{"entity": {"user": "a"}, "values": {"producer_byte_rate": 0.5}}]}),
    json.dumps({"version": 1, "quotas": [{"entity": {"ip": None}, "values": {"connection_creation_rate": 5}}]}),
    json.dumps({"version": 1, "quotas": [{"entity": {"user": "a"}, "values": {"producer_byte_rate": 5}},
                                         {"entity": {"user": "a"}, "values": {"consumer_byte_rate": 5}}]}),
    json.dumps({"version": 1, "quotas": [{"entity": {"user": 7}, "values": {"producer_byte_rate": 5}}]}),
])
def test_corrupt_file_raises_naming_it(tmp_path: Path, content: str) -> None:
    """A file that alter would not have written is refused at load, naming the file: starting without the
    quotas would silently lift them."""
    path = tmp_path / "quotas.json"
    path.write_text(content, encoding="utf-8")
    quotas, _ = new_quotas(path)
    with pytest.raises(ValueError, match=str(path)):
        quotas.load()


def test_failed_write_changes_nothing(tmp_path: Path) -> None:
    """The file is replaced atomically and memory follows only a durable write: a failing rename leaves
    both the old file and the old quotas, and the error reaches the caller."""
    path = tmp_path / "quotas.json"
    fs = FaultInjectingFileSystem()
    quotas, _ = new_quotas(path, fs=fs)
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=1000)
    before = path.read_bytes()
    fs.inject("replace", errno.EIO)
    with pytest.raises(OSError):
        quotas.alter([([(USER, "alice")], [(PRODUCER_BYTE_RATE, 2000, False)])], validate_only=False)
    assert path.read_bytes() == before
    assert quotas.quota("alice", "x", PRODUCER_BYTE_RATE) == (1000, ("alice", ""))
    set_quota(quotas, [(USER, "alice")], producer_byte_rate=3000)  # a leftover tmp file is no obstacle
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
