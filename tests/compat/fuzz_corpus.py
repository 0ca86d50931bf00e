"""The network fuzzer's inputs: a seed corpus of real client requests and the mutations applied to them.

Sans-io (bytes in, bytes out, a ``random.Random`` for every choice), so the same seed and case number
always give the same frames. The seeds are the golden request frames captured from real clients
(``tests/unit/golden``) plus a default-valued request for every API version the broker advertises. A
`Case` is what one fuzz connection sends: a few frames, each a seed with stacked mutations:

- byte level: bit flips, boundary values written over int16/int32/int64-wide spans, truncation and
  extension (the size prefix follows the new length);
- header level: api_key and api_version rewritten (served, unknown, negative, just past the range);
- schema level: the body decoded with the codec, one field set to a boundary value of its type (or an
  array emptied, nulled or multiplied, a string made long or odd, a uuid zeroed or random), re-encoded;
- record batches (Produce): header fields set to boundaries, the codec bits changed, the records payload
  decompressed, mutated and recompressed, decompression bombs; the CRC-32C is fixed up afterwards so the
  batch gets past the CRC check to decompression and record parsing;
- framing: the 4-byte size prefix replaced (negative, zero, 2^31-1, one more or less than the bytes).
"""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from protocol import codec, messages
from protocol.records import Compression, compress, decompress, write_crc
from protocol.records.batch import ATTRIBUTES_OFFSET, HEADER, HEADER_SIZE, LENGTH_OFFSET, LOG_OVERHEAD

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"
# The topic the golden Produce and Fetch frames name; the fuzzer creates it so they reach the log.
GOLDEN_TOPIC = "golden"
# Topic name of synthesized CreateTopics seeds; each case swaps it for a fresh name of the same length,
# so creations are not all answered TOPIC_ALREADY_EXISTS before their other fields are looked at.
FRESH_TOPIC = b"fuzz-new-topic"
CREATE_TOPICS = 19
MAX_FRAMES_PER_CASE = 6
# Bytes a single mutated frame may grow to (a multiplied array): large enough to hurt, small enough
# that a few concurrent connections cannot exhaust a shared test machine.
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_NODES = 50_000  # values in one mutated request, counted before encoding (copies share references)
_BOMB_BYTES = 80 * 1024 * 1024  # above DEFAULT_MAX_DECOMPRESSED_SIZE (64 MiB)

INT_RANGES = {"int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
              "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
WIDTHS = {2: INT_RANGES["int16"], 4: INT_RANGES["int32"], 8: INT_RANGES["int64"]}
ODD_STRINGS = ("", "golden", ".", "..", "../../etc", "a" * 249, "a" * 300, "x" * 32767, "\u00e9\u4e2d\U0001f600",
               "__consumer_offsets", "with space", "a/b", "\x00")


@dataclass(frozen=True)
class Seed:
    """One request frame (no size prefix) that a real or synthesized client would send."""

    name: str
    api_key: int
    api_version: int
    frame: bytes


@dataclass
class Case:
    """What one fuzz connection sends: wire frames (size prefix included, maybe mutated) in order."""

    index: int
    frames: list[bytes] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    mode: str = "pipelined"  # pipelined | stepwise | trickle
    abort: bool = False  # end with a TCP reset instead of a clean close

    def to_json(self) -> dict[str, Any]:
        return {"case": self.index, "mode": self.mode, "abort": self.abort,
                "frames": [f.hex() for f in self.frames], "labels": self.labels}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        return cls(data.get("case", -1), [bytes.fromhex(f) for f in data["frames"]], list(data.get("labels", [])),
                   data.get("mode", "pipelined"), bool(data.get("abort", False)))

    def well_framed(self) -> bool:
        """Every frame's size prefix matches its length: the broker sees the frames we think it sees."""
        return all(len(f) >= 4 and struct.unpack_from(">i", f)[0] == len(f) - 4 for f in self.frames)


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def golden_seeds(root: Path = GOLDEN) -> list[Seed]:
    """Every captured client request frame."""
    seeds = []
    for path in sorted(root.glob("*/*.bin")):
        frame = path.read_bytes()
        key, version = struct.unpack_from(">hh", frame)
        seeds.append(Seed(f"{path.parent.name}/{path.name}", key, version, frame))
    return seeds


def synthesized_seeds(served: list[tuple[int, int, int]]) -> list[Seed]:
    """A default-valued request at the lowest and highest advertised version of every served API, so
    APIs no captured client sent are fuzzed too (schema mutations then grow their arrays)."""
    seeds = []
    for key, lo, hi in served:
        if key not in codec.APIS:
            continue
        table = codec.request_table(key)
        cls = messages.class_for_table(table)
        for version in sorted({lo, hi}):
            body = cls()
            _populate(body, cls, version, codec.is_flexible(key, version),
                      fresh=FRESH_TOPIC.decode() if key == CREATE_TOPICS else None)
            try:
                wire = _join(codec.encode_request(key, version, 1, "moldau-fuzz", body))
            except codec.EncodeError:
                continue
            seeds.append(Seed(f"default/{codec.api_name(key)}_v{version}", key, version, wire[4:]))
    return seeds


_NAMES = {"name": GOLDEN_TOPIC, "topic": GOLDEN_TOPIC, "topic_name": GOLDEN_TOPIC, "resource_name": GOLDEN_TOPIC,
          "group_id": "fuzz-group", "key": "fuzz-group", "member_id": "", "protocol_type": "consumer"}


# Arrays left empty in the seeds (the mutations may still add elements): CreateTopics' manual
# assignments and a config named like the topic make the creation invalid before its partition count
# is looked at.
_LEFT_EMPTY = {"assignments", "configs"}


def _populate(obj: Any, root: type, version: int, flexible: bool, depth: int = 0, fresh: str | None = None) -> None:
    """One element in every array of structs and known names in name fields, so that the schema
    mutations of a default request reach nested fields (partition counts, indexes, offsets)."""
    structs = getattr(root, "_structs", {})
    for f in type(obj)._fields:
        if not _present(f, version, flexible):
            continue
        ftype, name = f["type"], f["name"]
        if ftype.startswith("[]") and ftype[2:] in structs and depth < 4 and name not in _LEFT_EMPTY:
            elem = structs[ftype[2:]]()
            _populate(elem, root, version, flexible, depth + 1, fresh)
            setattr(obj, name, [elem])
        elif ftype in structs and depth < 4:
            _populate(getattr(obj, name), root, version, flexible, depth + 1, fresh)
        elif ftype == "string" and name in _NAMES and not getattr(obj, name):
            setattr(obj, name, fresh if fresh and _NAMES[name] == GOLDEN_TOPIC else _NAMES[name])
        elif ftype in ("int32", "int16") and name in ("num_partitions", "replication_factor"):
            setattr(obj, name, 1)


def _join(parts: list[Any]) -> bytes:
    return b"".join(bytes(p) for p in parts)


# ---------------------------------------------------------------- byte level

def boundary(rng: random.Random, lo: int, hi: int) -> int:
    """A value at or next to an edge of [lo, hi], or a small/medium count."""
    return rng.choice([lo, lo + 1, -1, 0, 1, 2, hi - 1, hi, hi // 2 + 1, 255, 256, 65535, 65536, 10**6]
                      if hi > 2**20 else [lo, lo + 1, -1, 0, 1, hi - 1, hi, 255])


def _clamp_boundary(rng: random.Random, lo: int, hi: int) -> int:
    return min(max(boundary(rng, lo, hi), lo), hi)


def bit_flip(rng: random.Random, payload: bytes) -> tuple[bytes, str]:
    out = bytearray(payload)
    if not out:
        return payload, "bitflip(empty)"
    spots = []
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
        spots.append(i)
    return bytes(out), f"bitflip@{spots}"


def int_overwrite(rng: random.Random, payload: bytes, skip: int = 0) -> tuple[bytes, str]:
    """A boundary int16/int32/int64 written at a random position past ``skip`` (the header, say)."""
    width = rng.choice((2, 4, 4, 8))
    if len(payload) < skip + width:
        return payload, "int(short)"
    at = rng.randrange(skip, len(payload) - width + 1)
    lo, hi = WIDTHS[width]
    value = _clamp_boundary(rng, lo, hi)
    fmt = {2: ">h", 4: ">i", 8: ">q"}[width]
    out = bytearray(payload)
    struct.pack_into(fmt, out, at, value)
    return bytes(out), f"int{width * 8}@{at}={value}"


def truncate(rng: random.Random, payload: bytes) -> tuple[bytes, str]:
    cut = rng.randrange(len(payload) + 1) if payload else 0
    return payload[:cut], f"truncate@{cut}"


def extend(rng: random.Random, payload: bytes) -> tuple[bytes, str]:
    n = rng.choice((1, 2, 7, 64, 1024))
    tail = rng.choice((b"\x00" * n, b"\xff" * n, rng.randbytes(n)))
    return payload + tail, f"extend+{n}"


def rewrite_header(rng: random.Random, payload: bytes, served: dict[int, tuple[int, int]]) -> tuple[bytes, str]:
    """api_key and/or api_version replaced: another served API with this body, an unknown key, a
    version just outside the served range, negative values."""
    if len(payload) < 4:
        return payload, "header(short)"
    key, version = struct.unpack_from(">hh", payload)
    choice = rng.randrange(4)
    if choice == 0:
        key = rng.choice(sorted(served))
    elif choice == 1:
        key = rng.choice((-1, -32768, 32767, 999, 67, 68, 1000))
    if choice in (0, 2, 3) or rng.random() < 0.5:
        lo, hi = served.get(key, (0, 0))
        version = rng.choice((lo, hi, hi + 1, lo - 1, -1, 32767, -32768, rng.randint(lo, hi)))
        version = max(min(version, 32767), -32768)
    out = bytearray(payload)
    struct.pack_into(">hh", out, 0, key, version)
    return bytes(out), f"header(key={key},version={version})"


# ---------------------------------------------------------------- record batches

_BATCH_FIELDS = ("base_offset", "batch_length", "partition_leader_epoch", "magic", "crc", "attributes",
                 "last_offset_delta", "base_timestamp", "max_timestamp", "producer_id", "producer_epoch",
                 "base_sequence", "record_count")
_BATCH_COUNTS = ("record_count", "record_count", "last_offset_delta", "batch_length", "base_sequence")
_BATCH_RANGES = {"q": INT_RANGES["int64"], "i": INT_RANGES["int32"], "h": INT_RANGES["int16"],
                 "b": INT_RANGES["int8"], "I": (0, 2**32 - 1)}


@cache
def _bomb(compression: int) -> bytes:
    """Records payload that decompresses to more than the broker's cap (built once per codec)."""
    return compress(compression, bytes(_BOMB_BYTES))


def _fix(batch: bytearray) -> None:
    """Re-compute the CRC-32C when the header still frames the batch (so the broker gets past it)."""
    (length,) = struct.unpack_from(">i", batch, LENGTH_OFFSET)
    if len(batch) >= HEADER_SIZE and LOG_OVERHEAD + length == len(batch):
        write_crc(batch, 0)


def _with_payload(batch: bytes, payload: bytes, attributes: int | None = None) -> bytearray:
    out = bytearray(batch[:HEADER_SIZE]) + payload
    struct.pack_into(">i", out, LENGTH_OFFSET, len(out) - LOG_OVERHEAD)
    if attributes is not None:
        struct.pack_into(">h", out, ATTRIBUTES_OFFSET, attributes)
    return out


def mutate_batch(rng: random.Random, batch: bytes) -> tuple[bytes, str]:
    """One mutation of a v2 record batch, CRC fixed up afterwards where the framing still holds."""
    if len(batch) < HEADER_SIZE:
        return extend(rng, batch)
    fields = HEADER.unpack_from(batch)
    attributes = fields[5]
    codec_id = attributes & 0x07
    op = rng.randrange(8)
    if op <= 1:  # one header field at a boundary of its type; the counts and lengths most often
        i = rng.choice((*range(len(_BATCH_FIELDS)), *(_BATCH_FIELDS.index(n) for n in _BATCH_COUNTS)))
        fmt = HEADER.format[1:][i]
        lo, hi = _BATCH_RANGES[fmt]
        values = list(fields)
        values[i] = _clamp_boundary(rng, lo, hi)
        out = bytearray(batch)
        HEADER.pack_into(out, 0, *values)
        if _BATCH_FIELDS[i] != "crc":
            _fix(out)
        return bytes(out), f"batch.{_BATCH_FIELDS[i]}={values[i]}"
    if op == 2:  # codec bits changed without recompressing, flags set
        new = (attributes & ~0x07) | rng.randrange(8) | rng.choice((0, 0x08, 0x10, 0x20, 0x40, 0x7F80))
        new = struct.unpack(">h", struct.pack(">H", new & 0xFFFF))[0]
        out = bytearray(batch)
        struct.pack_into(">h", out, ATTRIBUTES_OFFSET, new)
        _fix(out)
        return bytes(out), f"batch.attributes={new:#x}"
    try:
        records = decompress(codec_id, batch[HEADER_SIZE:])
    except Exception:  # noqa: BLE001 - an already-broken payload: mutate its bytes as they are
        records, codec_id = batch[HEADER_SIZE:], 0
    if op == 3:  # decompression bomb
        bomb_codec = rng.choice((Compression.GZIP, Compression.ZSTD, Compression.LZ4))
        out = _with_payload(batch, _bomb(bomb_codec), (attributes & ~0x07) | bomb_codec)
        write_crc(out, 0)
        return bytes(out), f"batch.bomb({bomb_codec.name})"
    if op == 4:  # recompressed with another codec (valid), or many copies of the records
        new_codec = rng.choice(list(Compression))
        copies = rng.choice((1, 1, 2, 100))
        count = struct.unpack_from(">i", batch, HEADER_SIZE - 4)[0]
        out = _with_payload(batch, compress(new_codec, records * copies), (attributes & ~0x07) | new_codec)
        if copies > 1:
            struct.pack_into(">i", out, HEADER_SIZE - 4, (count * copies) & 0x7FFFFFFF)
        write_crc(out, 0)
        return bytes(out), f"batch.recompress({new_codec.name},x{copies})"
    # ops 5-7: the records themselves (varint lengths, deltas, headers) mutated, then recompressed
    mutated, label = rng.choice((bit_flip, int_overwrite, truncate, extend))(rng, records)
    out = _with_payload(batch, compress(codec_id, mutated) if codec_id in set(Compression) else mutated)
    write_crc(out, 0)
    return bytes(out), f"batch.records.{label}"


# ---------------------------------------------------------------- schema level

def _present(f: dict, version: int, flexible: bool) -> bool:
    rng_ = f.get("tagged") if "tag" in f else f.get("versions")
    if "tag" in f and not flexible:
        return False
    return rng_ is not None and rng_[0] <= version <= rng_[1]


def _slots(obj: Any, version: int, flexible: bool, path: str = "") -> list[tuple[Any, dict, str]]:
    """Every (object, field, path) of a decoded message present at ``version``, depth first."""
    out = []
    for f in type(obj)._fields:
        if not _present(f, version, flexible):
            continue
        name = f["name"]
        value = getattr(obj, name)
        out.append((obj, f, f"{path}{name}"))
        if isinstance(value, list):
            for i, item in enumerate(value[:4]):
                if isinstance(item, messages.Message):
                    out += _slots(item, version, flexible, f"{path}{name}[{i}].")
        elif isinstance(value, messages.Message):
            out += _slots(value, version, flexible, f"{path}{name}.")
    return out


def _mutate_value(rng: random.Random, obj: Any, f: dict, root: Any, version: int) -> tuple[Any, str]:
    ftype: str = f["type"]
    value = getattr(obj, f["name"])
    nullable = bool(f.get("nullable")) and f["nullable"][0] <= version <= f["nullable"][1]
    if ftype in INT_RANGES:
        lo, hi = INT_RANGES[ftype]
        return _clamp_boundary(rng, lo, hi), ""
    if ftype == "bool":
        return not value, ""
    if ftype == "float64":
        return rng.choice((float("nan"), float("inf"), -1.0, 1e308)), ""
    if ftype == "uuid":
        return rng.choice((uuid.UUID(int=0), uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=2**128 - 1))), ""
    if ftype == "string":
        if nullable and rng.random() < 0.2:
            return None, ""
        return (f"fuzz-{rng.getrandbits(32):08x}" if rng.random() < 0.3 else rng.choice(ODD_STRINGS)), ""
    if ftype == "records" and value:
        mutated, label = mutate_batch(rng, bytes(value))
        return mutated, label
    if ftype in ("bytes", "records"):
        return rng.choice((None if nullable else b"", b"", rng.randbytes(rng.choice((1, 17, 300))))), ""
    if ftype.startswith("[]"):
        items = list(value or [])
        choice = rng.randrange(5)
        if choice == 0:
            return (None if nullable else []), ""
        if choice == 1 and items:
            return items * min(rng.choice((2, 3, 50, 1000, 20000)), max(MAX_NODES // len(items), 1)), ""
        structs = getattr(type(root), "_structs", {})
        elem = ftype[2:]
        if elem in structs:
            return [*items, structs[elem]()], "append-default"
        lo, hi = INT_RANGES.get(elem, (0, 0))
        return [*items, *(_clamp_boundary(rng, lo, hi) for _ in range(rng.choice((1, 3))))] \
            if elem in INT_RANGES else [*items, rng.choice(ODD_STRINGS)], ""
    return value, "unchanged"


def _nodes(value: Any, limit: int = MAX_NODES) -> int:
    """Values in a decoded message, counting stops just past ``limit``."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, messages.Message):
            stack.extend(getattr(item, f["name"]) for f in type(item)._fields)
    return count


def mutate_records(rng: random.Random, payload: bytes) -> tuple[bytes, str]:
    """A request carrying record batches (Produce) with one batch mutated (`mutate_batch`); any other
    request gets `mutate_schema`."""
    return mutate_schema(rng, payload, records_only=True)


def mutate_schema(rng: random.Random, payload: bytes, records_only: bool = False) -> tuple[bytes, str]:
    """Decode the request, change 1-3 fields to edge values of their types, encode it again."""
    try:
        header, offset = codec.decode_request_header(payload)
        key, version = header.request_api_key, header.request_api_version
        body = codec.decode_request_body(key, version, payload, offset)
    except (codec.DecodeError, KeyError):
        return int_overwrite(rng, payload)
    flexible = codec.is_flexible(key, version)
    labels = []
    for _ in range(rng.randint(1, 3)):
        slots = _slots(body, version, flexible)
        if not slots:
            break
        ints = [slot for slot in slots if slot[1]["type"] in INT_RANGES]
        records = [slot for slot in slots if slot[1]["type"] == "records" and getattr(slot[0], slot[1]["name"])]
        # Integers (counts, indexes, sizes, timeouts) are where unbounded work hides: half the picks.
        if records_only and records:
            obj, f, path = rng.choice(records)
        else:
            obj, f, path = rng.choice(ints if ints and rng.random() < 0.5 else slots)
        new, note = _mutate_value(rng, obj, f, body, version)
        old = getattr(obj, f["name"])
        setattr(obj, f["name"], new)
        if _nodes(body) > MAX_NODES:
            setattr(obj, f["name"], old)
            continue
        shown = f"<{len(new)} items>" if isinstance(new, list) else (
            f"<{len(new)} bytes>" if isinstance(new, (bytes, bytearray)) else repr(new)[:40])
        labels.append(f"{path}={shown}{' ' + note if note else ''}")
    try:
        wire = _join(codec.encode_request(key, version, header.correlation_id, header.client_id, body))
    except (codec.EncodeError, ValueError, OverflowError, TypeError, UnicodeEncodeError):
        return int_overwrite(rng, payload)
    if len(wire) > MAX_FRAME_BYTES:
        return int_overwrite(rng, payload)
    return wire[4:], "schema(" + "; ".join(labels) + ")"


# ---------------------------------------------------------------- cases

def set_correlation_id(payload: bytes, correlation_id: int) -> bytes:
    if len(payload) < 8:
        return payload
    return payload[:4] + struct.pack(">i", correlation_id) + payload[8:]


def size_prefix(rng: random.Random, payload: bytes, max_request: int) -> tuple[bytes, str]:
    """The frame with a hostile size prefix in place of the true one."""
    n = len(payload)
    size = rng.choice((-1, -(2**31), 0, 1, 3, 2**31 - 1, n + 1, max(n - 1, 0), max_request, max_request + 1,
                       rng.randint(0, 2**31 - 1)))
    return struct.pack(">i", size) + payload, f"size_prefix={size}"


_API_WEIGHT = {0: 5, 1: 2, 3: 2}


class CaseMaker:
    """Deterministic case generation: case ``i`` of seed ``s`` is always the same frames."""

    def __init__(self, seeds: list[Seed], served: list[tuple[int, int, int]], seed: int,
                 max_request: int = 104857600) -> None:
        if not seeds:
            raise ValueError("the fuzz corpus is empty: tests/unit/golden holds no .bin frames")
        self.seeds = seeds
        # APIs are picked evenly, then a seed of the API: the golden set would otherwise drown the rest.
        self.by_api: dict[int, list[Seed]] = {}
        for s in seeds:
            self.by_api.setdefault(s.api_key, []).append(s)
        # Produce carries record batches, the richest input: it gets more turns, and Fetch and Metadata too.
        self.apis = [k for k in sorted(self.by_api) for _ in range(_API_WEIGHT.get(k, 1))]
        self.served = {k: (lo, hi) for k, lo, hi in served}
        self.seed = seed
        self.max_request = max_request
        self._byte_ops: list[tuple[int, Callable[[random.Random, bytes], tuple[bytes, str]]]] = [
            (5, bit_flip), (6, lambda r, p: int_overwrite(r, p, 8)), (3, truncate), (3, extend),
            (4, lambda r, p: rewrite_header(r, p, self.served)), (14, mutate_schema), (8, mutate_records),
        ]

    def _op(self, rng: random.Random) -> Callable[[random.Random, bytes], tuple[bytes, str]]:
        total = sum(w for w, _ in self._byte_ops)
        pick = rng.randrange(total)
        for weight, op in self._byte_ops:
            if pick < weight:
                return op
            pick -= weight
        raise AssertionError("unreachable")

    def make(self, index: int) -> Case:
        rng = random.Random(f"{self.seed}:{index}")
        case = Case(index, mode=rng.choice(("pipelined", "pipelined", "stepwise", "stepwise", "trickle")),
                    abort=rng.random() < 0.15)
        # Sequences with state: pick frames of one client in capture order now and then.
        count = rng.randint(1, MAX_FRAMES_PER_CASE)
        for n in range(count):
            seed = rng.choice(self.by_api[rng.choice(self.apis)])
            payload = set_correlation_id(seed.frame, index * 16 + n)
            payload = payload.replace(FRESH_TOPIC, f"fz{rng.getrandbits(48):012x}".encode())
            labels = [seed.name]
            last = n == count - 1
            # A frame that does not decode closes the connection, so only the last frame of a case gets
            # the byte-level mutations; the ones before it are clean (to build state) or schema-mutated
            # (still decodable, so the handler sees them).
            if not last and rng.random() < 0.6:
                payload, label = rng.choice((mutate_schema, mutate_schema, mutate_records))(rng, payload)
                labels.append(label)
            elif last and rng.random() < 0.9:
                for _ in range(rng.choice((1, 1, 1, 2, 3))):
                    payload, label = self._op(rng)(rng, payload)
                    labels.append(label)
            if last and rng.random() < 0.08:
                wire, label = size_prefix(rng, payload, self.max_request)
                labels.append(label)
            else:
                wire = framed(payload)
            case.frames.append(wire)
            case.labels.append(" | ".join(labels))
        return case
