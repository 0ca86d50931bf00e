"""Every API, version and direction in Kafka's specs round-trips through the codec:
decode(encode(x)) == x and encode(decode(b)) == b, with unknown tagged fields preserved."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from protocol import codec
from tests.unit.strategies import all_cases, message_strategy

CASES = all_cases()


def _table(api_key: int, direction: str) -> dict:
    return codec.request_table(api_key) if direction == "request" else codec.response_table(api_key)


def _join(parts: list) -> bytes:
    return b"".join(bytes(x) for x in parts)


@pytest.mark.parametrize(("api_key", "version", "direction"), CASES,
                         ids=[f"{codec.api_name(k)}-v{v}-{d}" for k, v, d in CASES])
def test_round_trip(api_key: int, version: int, direction: str) -> None:
    table = _table(api_key, direction)
    c = codec.codec_for(table, version)

    @settings(max_examples=12, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(message_strategy(table, version))
    def check(obj: object) -> None:
        wire = _join(c.encode(obj))
        decoded, end = c.decode(memoryview(wire), 0)
        assert end == len(wire), f"decoder stopped at {end} of {len(wire)} bytes"
        assert decoded == obj
        assert _join(c.encode(decoded)) == wire

    check()


def test_every_api_in_the_specs_is_covered() -> None:
    keys = {k for k, _, _ in CASES}
    assert keys == set(range(88)), sorted(set(range(88)) - keys)


def _internal_cases() -> list[tuple[str, int]]:
    from protocol.schema.internal import DATA

    return [(name, v) for name, t in DATA.items() for v in range(t["valid"][0], t["valid"][1] + 1)]


@pytest.mark.parametrize(("name", "version"), _internal_cases(), ids=[f"{n}-v{v}" for n, v in _internal_cases()])
def test_internal_record_round_trip(name: str, version: int) -> None:
    """The internal topics' record formats (int16 version + fields) round-trip at every version."""
    table = codec.internal_table(name)

    @settings(max_examples=12, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(message_strategy(table, version))
    def check(obj: object) -> None:
        wire = codec.encode_versioned(name, version, obj)
        assert codec.decode_versioned(name, wire) == (version, obj)

    check()
