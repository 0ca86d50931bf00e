"""Request frames captured from real clients decode and re-encode to the very same bytes.

The fixtures in ``tests/unit/golden/<client>/<Api>_v<N>[_<kind>].bin`` were recorded by
``scripts/capture_golden.py`` from confluent-kafka (librdkafka), kafka-python, aiokafka and kcat; see
``golden/README.md`` for how. These tests only read the files: no client or network is involved.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from protocol import codec
from protocol.schema import headers

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = sorted(GOLDEN.glob("*/*.bin"))
NAME = re.compile(r"^(?P<api>[A-Za-z]+)_v(?P<version>\d+)(?:_(?P<kind>[a-z0-9-]+))?\.bin$")

CLIENTS = ("confluent-kafka", "kafka-python", "aiokafka", "kcat")
REQUIRED = ("ApiVersions", "Metadata", "Produce", "Fetch", "JoinGroup", "SyncGroup", "OffsetCommit")
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# (client, API) pairs a client cannot send in the capture scenarios, with the reason. Every client sent
# every API in REQUIRED when the fixtures were captured, so there are none.
GAPS: dict[tuple[str, str], str] = {}


def _fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _join(parts: list) -> bytes:
    return b"".join(bytes(p) for p in parts)


def _first_difference(expected: bytes, actual: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
              min(len(expected), len(actual)))
    lo = max(at - 8, 0)
    return (f"first difference at byte {at} (captured {len(expected)} bytes, re-encoded {len(actual)}): "
            f"captured[{lo}:{at + 8}]={expected[lo:at + 8].hex(' ')} "
            f"re-encoded[{lo}:{at + 8}]={actual[lo:at + 8].hex(' ')}")


def test_fixtures_are_present() -> None:
    """The captured set is committed with the tests; an empty directory would make every test vacuous."""
    assert {p.parent.name for p in FIXTURES} == set(CLIENTS), \
        f"expected fixtures for {CLIENTS}, found directories {sorted({p.parent.name for p in FIXTURES})}"


@pytest.mark.parametrize("path", FIXTURES, ids=_fixture_id)
def test_fixture_name_matches_header(path: Path) -> None:
    """The file name states the API and version that the frame's own header carries."""
    match = NAME.match(path.name)
    assert match, f"{path.name} is not named <Api>_v<version>[_<kind>].bin"
    header, _ = codec.decode_request_header(path.read_bytes())
    assert (codec.api_name(header.request_api_key), header.request_api_version) == \
        (match["api"], int(match["version"])), f"{_fixture_id(path)} holds api key {header.request_api_key}"


@pytest.mark.parametrize("path", FIXTURES, ids=_fixture_id)
def test_fixture_decodes_and_reencodes_to_identical_bytes(path: Path) -> None:
    """A real client's request decodes completely, and the decoded header and body encode back to exactly
    the bytes the client sent: field order, widths, compact and tagged encodings all agree with Kafka's."""
    data = path.read_bytes()
    header, body = codec.decode_request(data)
    key, version = header.request_api_key, header.request_api_version

    header_codec = codec.codec_for(headers.REQUEST_HEADER, codec.request_header_version(key, version))
    body_codec = codec.codec_for(codec.request_table(key), version)
    _, body_at = header_codec.decode(memoryview(data), 0)
    _, end = body_codec.decode(memoryview(data), body_at)
    assert end == len(data), f"the body ends at byte {end} but the frame has {len(data)} bytes"

    header_bytes = _join(header_codec.encode(header))
    assert header_bytes == data[:body_at], "header: " + _first_difference(data[:body_at], header_bytes)
    body_bytes = _join(body_codec.encode(body))
    assert body_bytes == data[body_at:], "body: " + _first_difference(data[body_at:], body_bytes)


@pytest.mark.parametrize("path", FIXTURES, ids=_fixture_id)
def test_encode_request_rebuilds_the_frame(path: Path) -> None:
    """``codec.encode_request`` from the decoded header fields and body yields the size prefix and the
    captured frame."""
    data = path.read_bytes()
    header, body = codec.decode_request(data)
    frame = _join(codec.encode_request(header.request_api_key, header.request_api_version,
                                       header.correlation_id, header.client_id, body))
    expected = len(data).to_bytes(4, "big") + data
    assert frame == expected, _first_difference(expected, frame)


@pytest.mark.parametrize("client", CLIENTS)
def test_each_client_sent_the_requests_that_matter_most(client: str) -> None:
    """Each client contributed ApiVersions, Metadata, Produce, Fetch, JoinGroup, SyncGroup and OffsetCommit
    (except the gaps listed in GAPS), and a Produce for each of the five compression codecs."""
    names = [p.name for p in FIXTURES if p.parent.name == client]
    missing = [api for api in REQUIRED
               if (client, api) not in GAPS and not any(NAME.match(n)["api"] == api for n in names)]
    assert not missing, f"{client}: no fixture for {missing}; have {sorted(names)}"
    produce_codecs = {NAME.match(n)["kind"] for n in names if n.startswith("Produce_")}
    assert produce_codecs == set(CODECS), f"{client}: Produce fixtures for {sorted(produce_codecs)}"


def test_manifest_lists_exactly_the_fixture_files() -> None:
    """manifest.json (written with the fixtures) describes every file, and its sizes match."""
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    assert sorted(manifest) == [_fixture_id(p) for p in FIXTURES]
    for path in FIXTURES:
        entry = manifest[_fixture_id(path)]
        assert entry["bytes"] == path.stat().st_size, f"{_fixture_id(path)}: size differs from the manifest"
        assert entry["client"] == path.parent.name


def test_fixtures_stay_small() -> None:
    """The whole set stays well under a megabyte."""
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert total < 1_000_000, f"golden fixtures take {total} bytes"
