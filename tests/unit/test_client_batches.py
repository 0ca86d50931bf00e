"""The record batches that real clients produced decode with ``protocol.records``.

Each ``golden/<client>/Produce_v<N>_<codec>.bin`` is a Produce request captured by
``scripts/capture_golden.py`` from a producer configured with that compression codec, sending three
known records (below) to partition 0 of topic ``golden``. The batches must have magic 2 and a valid
CRC-32C, carry the configured codec in their attributes, and decode to exactly those records.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import codec
from protocol.records import Compression, RecordBatch, iter_batches, iter_records

GOLDEN = Path(__file__).parent / "golden"
PRODUCE = sorted(GOLDEN.glob("*/Produce_v*_*.bin"))
NAME = re.compile(r"^Produce_v(?P<version>\d+)_(?P<codec>[a-z0-9]+)\.bin$")
CLIENTS = ("confluent-kafka", "kafka-python", "aiokafka", "kcat")
CODECS = {"none": Compression.NONE, "gzip": Compression.GZIP, "snappy": Compression.SNAPPY,
          "lz4": Compression.LZ4, "zstd": Compression.ZSTD}

# The records every capture scenario produced, in order (the same list as RECORDS in the capture script).
HEADERS = (("h1", b"one"), ("h2", b"two"))
EXPECTED = [(f"golden-key-{i}".encode(), (f"golden-value-{i}-" + "0123456789" * 4).encode(), HEADERS)
            for i in range(3)]


def _fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _batches(path: Path) -> list[RecordBatch]:
    """The batches of the only partition (golden/0) of a captured Produce request."""
    _, body = codec.decode_request(path.read_bytes())
    partitions = [(t.name, p.index, p.records) for t in body.topic_data for p in t.partition_data]
    assert [(name, index) for name, index, _ in partitions] == [("golden", 0)], \
        f"expected one partition golden/0, got {[(n, i) for n, i, _ in partitions]}"
    records = partitions[0][2]
    assert records, "the Produce request carries no records"
    return [batch for _, batch in iter_batches(records)]


def test_every_client_produced_with_every_codec() -> None:
    """Each client has one Produce fixture per compression codec."""
    found = {(p.parent.name, NAME.match(p.name)["codec"]) for p in PRODUCE}
    expected = {(client, c) for client in CLIENTS for c in CODECS}
    assert found == expected, f"missing {sorted(expected - found)}, unexpected {sorted(found - expected)}"


def test_snappy_fixtures_cover_both_framings() -> None:
    """librdkafka (confluent-kafka, kcat) writes one raw snappy block; kafka-python and aiokafka write the
    xerial framing (magic b'\\x82SNAPPY\\x00' and chunks), as Kafka's Java client does. Both kinds are in the
    set, so the decoding test below reads both."""
    xerial = b"\x82SNAPPY\x00"
    framing = {}
    for path in PRODUCE:
        if NAME.match(path.name)["codec"] == "snappy":
            payload = bytes(_batches(path)[0].records_payload)
            framing[path.parent.name] = "xerial" if payload.startswith(xerial) else "raw"
    expected = {"confluent-kafka": "raw", "kcat": "raw", "kafka-python": "xerial", "aiokafka": "xerial"}
    assert framing == expected, f"snappy framing per client: {framing}"


@pytest.mark.parametrize("path", PRODUCE, ids=_fixture_id)
def test_batch_header_is_v2_with_valid_crc_and_configured_codec(path: Path) -> None:
    """Magic 2, the stored CRC-32C equals the one computed over attributes..end, and the attributes name
    the compression codec the producer was configured with."""
    codec_name = NAME.match(path.name)["codec"]
    for batch in _batches(path):
        assert batch.magic == 2, f"magic {batch.magic}"
        assert batch.validate_crc(), f"stored CRC {batch.crc:#010x}, computed {batch.compute_crc():#010x}"
        assert batch.compression == CODECS[codec_name], \
            f"attributes {batch.attributes:#06x} name codec {batch.compression}, configured {codec_name}"
        assert not batch.is_control and not batch.is_transactional


@pytest.mark.parametrize("path", PRODUCE, ids=_fixture_id)
def test_records_decode_to_what_the_client_sent(path: Path) -> None:
    """Decompressed and decoded, the records are the three known keys, values and headers, in order, with
    offsets 0..2 relative to the batch the client built."""
    batches = _batches(path)
    records = [r for batch in batches for r in iter_records(batch)]
    got = [(r.key, r.value, tuple(r.headers)) for r in records]
    assert got == EXPECTED, f"decoded {got}"
    assert [r.offset for r in records] == [0, 1, 2]
    assert sum(b.record_count for b in batches) == len(EXPECTED)
    assert all(r.timestamp > 0 for r in records), f"timestamps {[r.timestamp for r in records]}"
