"""The generic Kafka message codec: bytes <-> message objects for every API, version and direction.

For each (table, version) the codec generates a specialised reader and writer from the schema tables
in ``protocol/schema/`` (Python source compiled once, then cached): consecutive fixed-width fields are
packed with a single ``struct`` call, compact/classic encodings and tagged fields are chosen at
generation time, and ``records`` fields stay slices of the input (decode) or separate output parts
(encode), so record bytes are never copied. Each compiled codec is a ``construct.Construct`` and can be
nested in other ``construct`` structures.

Public entry points: ``decode_request_header``, ``decode_request_body``, ``decode_request``,
``encode_response``, ``encode_request``, ``decode_response``, ``codec_for``.
"""

from __future__ import annotations

import struct
from typing import Any

import construct

from protocol import messages
from protocol import primitives as p
from protocol.schema import APIS

MAX_VERSION = 0x7FFF
API_VERSIONS_KEY = 18
CONTROLLED_SHUTDOWN_KEY = 7

# Free-text fields: cut when too long for a classic string instead of failing the response.
_FREE_TEXT_FIELDS = frozenset({"error_message"})

_FIXED = {"int8": "b", "int16": "h", "uint16": "H", "int32": "i", "int64": "q", "float64": "d", "bool": "?"}


class DecodeError(ValueError):
    """Bytes that do not decode as the message they claim to be."""

    def __init__(self, message: str, api_key: int | None = None, api_version: int | None = None,
                 correlation_id: int | None = None) -> None:
        super().__init__(message)
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        where = []
        if self.api_key is not None:
            name = api_name(self.api_key) or "unknown"
            where.append(f"api_key={self.api_key} ({name})")
        if self.api_version is not None:
            where.append(f"api_version={self.api_version}")
        if self.correlation_id is not None:
            where.append(f"correlation_id={self.correlation_id}")
        return f"{self.args[0]}" + (f" [{', '.join(where)}]" if where else "")


class EncodeError(ValueError):
    """A message object that cannot be written at the chosen version."""


def _in(vrange: tuple[int, int] | None, version: int) -> bool:
    return vrange is not None and vrange[0] <= version <= vrange[1]


# ---------------------------------------------------------------- code generation

class _Generator:
    """Writes the reader and writer source of one table at one version."""

    def __init__(self, table: dict, version: int) -> None:
        self.table = table
        self.version = version
        self.flexible = _in(table["flexible"], version)
        self.cls = messages.class_for_table(table)
        self.ns: dict[str, Any] = {
            "_p": p, "_new": object.__new__, "WireError": p.WireError, "EncodeError": EncodeError,
            "_Writer": p.Writer, "_write_tags": _write_tags, "_read_tags": _read_tags,
        }
        self.src: list[str] = []
        self.done: set[str] = set()
        self.counter = 0
        self.tag_maps: list[dict] = []
        self.min_sizes: dict[str, int] = {}

    # -- helpers -------------------------------------------------------------------------------

    def const(self, value: Any) -> str:
        self.counter += 1
        name = f"_c{self.counter}"
        self.ns[name] = value
        return name

    def packer(self, fmt: str) -> str:
        return self.const(struct.Struct(">" + fmt))

    def struct_fields(self, name: str) -> list[dict]:
        if name == self.table["name"]:
            return self.table["fields"]
        return self.table["structs"][name]

    def struct_cls(self, name: str) -> type:
        return self.cls if name == self.table["name"] else self.cls._structs[name]

    def field_flexible(self, f: dict) -> bool:
        if "flexible" in f:
            return _in(f["flexible"], self.version)
        return self.flexible

    def layout(self, sname: str) -> tuple[list[dict], list[dict], list[dict]]:
        """(regular fields, tagged fields, absent fields) of a struct at this version."""
        regular, tagged, absent = [], [], []
        for f in self.struct_fields(sname):
            if "tag" in f:
                (tagged if self.flexible and _in(f["tagged"], self.version) else absent).append(f)
            elif _in(f["versions"], self.version):
                regular.append(f)
            else:
                absent.append(f)
        return regular, tagged, absent

    def default_expr(self, f: dict) -> str:
        value, fresh = messages.default_factory(f, self.cls._structs)
        c = self.const(value)
        return f"{c}()" if fresh else c

    # -- smallest encodings (for the count-vs-bytes-left check of arrays) -------------------------

    def value_min_size(self, ftype: str, flex: bool, nullable: bool) -> int:
        """The fewest bytes one value of ``ftype`` can take on the wire at this version."""
        if ftype in _FIXED:
            return struct.calcsize(">" + _FIXED[ftype])
        if ftype == "uuid":
            return 16
        if ftype == "string":
            return 1 if flex else 2
        if ftype in ("bytes", "records") or ftype.startswith("[]"):
            return 1 if flex else 4
        return 1 if nullable else self.struct_min_size(ftype)

    def struct_min_size(self, sname: str) -> int:
        size = self.min_sizes.get(sname)
        if size is None:
            regular, _, _ = self.layout(sname)
            size = sum(self.value_min_size(f["type"], self.field_flexible(f), _in(f.get("nullable"), self.version))
                       for f in regular) + (1 if self.flexible else 0)  # the tag count
            # An element of zero bytes (an empty struct) still costs an object: count it as one byte.
            self.min_sizes[sname] = size = max(size, 1)
        return size

    # -- readers -------------------------------------------------------------------------------

    def reader(self, sname: str) -> str:
        fn = f"r_{sname}"
        if fn in self.done:
            return fn
        self.done.add(fn)
        regular, tagged, absent = self.layout(sname)
        cls = self.const(self.struct_cls(sname))
        lines = [f"def {fn}(buf, pos, b):", f"    o = _new({cls})"]
        for f in absent:
            lines.append(f"    o.{f['name']} = {self.default_expr(f)}")
        i = 0
        while i < len(regular):
            run = []
            while i < len(regular) and regular[i]["type"] in _FIXED:
                run.append(regular[i])
                i += 1
            if run:
                fmt = "".join(_FIXED[f["type"]] for f in run)
                s = self.packer(fmt)
                targets = ", ".join(f"o.{f['name']}" for f in run) + ("," if len(run) == 1 else "")
                lines.append(f"    {targets} = {s}.unpack_from(buf, pos)")
                lines.append(f"    pos += {struct.calcsize('>' + fmt)}")
                continue
            f = regular[i]
            i += 1
            lines += self.read_value(f, "v", "    ")
            lines.append(f"    o.{f['name']} = v")
        if self.flexible:
            for f in tagged:
                lines.append(f"    o.{f['name']} = {self.default_expr(f)}")
            treaders = {f["tag"]: (f["name"], self.tag_reader(sname, f)) for f in tagged}
            self.tag_maps.append(treaders)  # function names, resolved after compilation
            tr = self.const(treaders)
            lines.append("    if buf[pos]:")
            lines.append(f"        pos = _read_tags(buf, pos, o, {tr}, b)")
            lines.append("    else:")
            lines.append("        o._unknown_tags = None")
            lines.append("        pos += 1")
        else:
            lines.append("    o._unknown_tags = None")
        lines.append("    return o, pos")
        self.src.append("\n".join(lines))
        return fn

    def tag_reader(self, sname: str, f: dict) -> str:
        fn = f"t_{sname}_{f['name']}"
        lines = [f"def {fn}(buf, pos, b):"] + self.read_value(f, "v", "    ") + ["    return v, pos"]
        self.src.append("\n".join(lines))
        return fn

    def read_value(self, f: dict, var: str, ind: str) -> list[str]:
        ftype = f["type"]
        flex = self.field_flexible(f)
        nullable = _in(f.get("nullable"), self.version)
        name = f["name"]
        if ftype in _FIXED:
            s = self.packer(_FIXED[ftype])
            size = struct.calcsize(">" + _FIXED[ftype])
            return [f"{ind}{var}, = {s}.unpack_from(buf, pos)", f"{ind}pos += {size}"]
        if ftype == "uuid":
            return [f"{ind}{var}, pos = _p.read_uuid(buf, pos)"]
        if ftype == "string":
            return self.read_string(var, ind, flex, nullable, name)
        if ftype in ("bytes", "records"):
            fn = "_p.read_compact_bytes" if flex else "_p.read_bytes"
            out = [f"{ind}{var}, pos = {fn}(buf, pos)"]
            if ftype == "bytes":
                out.append(f"{ind}if {var} is not None: {var} = bytes({var})")
            if not nullable:
                out.append(f"{ind}if {var} is None: raise WireError('non-nullable field {name} was null')")
            return out
        if ftype.startswith("[]"):
            elem = ftype[2:]
            lenfn = "_p.read_compact_array_len" if flex else "_p.read_array_len"
            # Every count is checked against the bytes left (n elements take at least n * min_size) and
            # taken from the message's element budget before anything is allocated.
            min_size = self.value_min_size(elem, flex, False)
            out = [f"{ind}n, pos = {lenfn}(buf, pos, {min_size}, b)", f"{ind}if n < 0:"]
            if nullable:
                out.append(f"{ind}    {var} = None")
            else:
                out.append(f"{ind}    raise WireError('non-nullable array {name} was null')")
            out.append(f"{ind}else:")
            if elem in _FIXED and elem != "bool":
                size = struct.calcsize(">" + _FIXED[elem])
                out += [
                    f"{ind}    {var} = list(struct_unpack_from('>%d{_FIXED[elem]}' % n, buf, pos))",
                    f"{ind}    pos += n * {size}",
                ]
                self.ns["struct_unpack_from"] = struct.unpack_from
                return out
            out.append(f"{ind}    {var} = []")
            out.append(f"{ind}    for _ in range(n):")
            if elem in self.table["structs"]:
                rfn = self.reader(elem)
                out.append(f"{ind}        e, pos = {rfn}(buf, pos, b)")
            else:
                out += self.read_value({"type": elem, "name": name, "nullable": None,
                                        **({"flexible": f["flexible"]} if "flexible" in f else {})},
                                       "e", ind + "        ")
            out.append(f"{ind}        {var}.append(e)")
            return out
        # a single struct
        rfn = self.reader(ftype)
        if nullable:
            return [
                f"{ind}if buf[pos] >= 128:",
                f"{ind}    {var} = None",
                f"{ind}    pos += 1",
                f"{ind}else:",
                f"{ind}    {var}, pos = {rfn}(buf, pos + 1, b)",
            ]
        return [f"{ind}{var}, pos = {rfn}(buf, pos, b)"]

    def read_string(self, var: str, ind: str, flex: bool, nullable: bool, name: str) -> list[str]:
        """A string read inline (no helper call: arrays of short names are the costliest input to decode
        per byte). The length is checked against the bytes left before the slice."""
        if flex:
            head = [f"{ind}n, pos = _p.read_uvarint(buf, pos)", f"{ind}n -= 1"]
        else:
            head = [f"{ind}n, = {self.packer('h')}.unpack_from(buf, pos)", f"{ind}pos += 2"]
        null = (f"{ind}    {var} = None" if nullable
                else f"{ind}    raise WireError('non-nullable field {name} was null')")
        return head + [
            f"{ind}if n > 0:",
            f"{ind}    end = pos + n",
            (f"{ind}    if end > len(buf): raise WireError(f'string of {{n}} bytes at offset {{pos}} runs past "
             f"the end of the {{len(buf)}}-byte message')"),
            f"{ind}    {var} = str(buf[pos:end], 'utf-8')",
            f"{ind}    pos = end",
            f"{ind}elif n == 0:",
            f"{ind}    {var} = ''",
            f"{ind}elif n == -1:",
            null,
            f"{ind}else:",
            f"{ind}    raise WireError(f'negative string length {{n}}')",
        ]

    # -- writers -------------------------------------------------------------------------------

    def writer(self, sname: str) -> str:
        fn = f"w_{sname}"
        if fn in self.done:
            return fn
        self.done.add(fn)
        regular, tagged, absent = self.layout(sname)
        lines = [f"def {fn}(w, o):"]
        for f in absent:
            if f.get("ignorable"):
                continue
            d = self.default_expr(f)
            vers = f"tagged versions {f['tagged']}" if "tag" in f and _in(f["versions"], self.version) \
                else f"versions {f['versions'][0]}-{f['versions'][1]}"
            msg = (f"field {sname}.{f['name']} is not in version {self.version} of "
                   f"{self.table['name']} ({vers}) and is not ignorable, but was set to %r")
            lines.append(f"    if o.{f['name']} != {d}: raise EncodeError({msg!r} % (o.{f['name']},))")
        lines.append("    b = w.buf")
        i = 0
        while i < len(regular):
            run = []
            while i < len(regular) and regular[i]["type"] in _FIXED:
                run.append(regular[i])
                i += 1
            if run:
                s = self.packer("".join(_FIXED[f["type"]] for f in run))
                args = ", ".join(f"o.{f['name']}" for f in run)
                lines.append(f"    b += {s}.pack({args})")
                continue
            f = regular[i]
            i += 1
            lines += self.write_value(f, f"o.{f['name']}", "    ")
        if self.flexible:
            if tagged:
                writers = []
                for f in tagged:
                    wfn = self.tag_writer(sname, f)
                    writers.append((f["tag"], f["name"], self.default_expr(f), wfn))
                entries = ", ".join(f"({t}, o.{n} != {d}, o.{n}, {wfn})" for t, n, d, wfn in writers)
                lines.append(f"    _write_tags(b, o._unknown_tags, ({entries},))")
            else:
                lines.append("    if o._unknown_tags: _write_tags(b, o._unknown_tags, ())")
                lines.append("    else: b.append(0)")
        self.src.append("\n".join(lines))
        return fn

    def tag_writer(self, sname: str, f: dict) -> str:
        fn = f"tw_{sname}_{f['name']}"
        lines = [f"def {fn}(v):", "    w = _Writer()", "    b = w.buf"]
        lines += self.write_value(f, "v", "    ")
        lines.append("    return b''.join(w.finish())")
        self.src.append("\n".join(lines))
        return fn

    def write_value(self, f: dict, expr: str, ind: str) -> list[str]:
        ftype = f["type"]
        flex = self.field_flexible(f)
        nullable = _in(f.get("nullable"), self.version)
        name = f["name"]
        if ftype in _FIXED:
            return [f"{ind}b += {self.packer(_FIXED[ftype])}.pack({expr})"]
        if ftype == "uuid":
            return [f"{ind}b += {expr}.bytes"]
        not_null = (f"{ind}if {expr} is None: raise EncodeError('field {name} is not nullable in version "
                    f"{self.version} of {self.table['name']}')")
        null_check = [] if nullable else [not_null]
        if ftype == "string":
            fn = "_p.write_compact_string" if flex else "_p.write_string"
            if not flex and name in _FREE_TEXT_FIELDS:
                fn = "_p.write_message_string"
            return null_check + [f"{ind}{fn}(b, {expr})"]
        if ftype in ("bytes", "records"):
            fn = "_p.write_compact_bytes" if flex else "_p.write_bytes"
            return null_check + [f"{ind}{fn}(w, {expr})", f"{ind}b = w.buf"]
        if ftype.startswith("[]"):
            elem = ftype[2:]
            out = list(null_check)
            null = "b.append(0)" if flex else "b += b'\\xff\\xff\\xff\\xff'"
            count = (f"_p.write_uvarint(b, len({expr}) + 1)" if flex
                     else f"b += {self.packer('i')}.pack(len({expr}))")
            out.append(f"{ind}if {expr} is None: {null}")
            out.append(f"{ind}else:")
            out.append(f"{ind}    {count}")
            if elem in _FIXED and elem != "bool":
                self.ns["struct_pack"] = struct.pack
                out.append(f"{ind}    b += struct_pack('>%d{_FIXED[elem]}' % len({expr}), *{expr})")
                return out
            out.append(f"{ind}    for e in {expr}:")
            if elem in self.table["structs"]:
                wfn = self.writer(elem)
                out.append(f"{ind}        {wfn}(w, e)")
                out.append(f"{ind}    b = w.buf")
            else:
                sub = {"type": elem, "name": name, "nullable": None,
                       **({"flexible": f["flexible"]} if "flexible" in f else {})}
                out += self.write_value(sub, "e", ind + "        ")
            return out
        wfn = self.writer(ftype)
        if nullable:
            return [
                f"{ind}if {expr} is None: b.append(255)",
                f"{ind}else:",
                f"{ind}    b.append(1)",
                f"{ind}    {wfn}(w, {expr})",
                f"{ind}    b = w.buf",
            ]
        return null_check + [f"{ind}{wfn}(w, {expr})", f"{ind}b = w.buf"]

    def compile(self) -> tuple[Any, Any]:
        top = self.table["name"]
        self.reader(top)
        self.writer(top)
        code = "\n\n".join(self.src)
        exec(compile(code, f"<codec {top} v{self.version}>", "exec"), self.ns)  # noqa: S102 - our tables
        for tag_map in self.tag_maps:
            for tag, (name, fn) in tag_map.items():
                tag_map[tag] = (name, self.ns[fn])
        return self.ns[f"r_{top}"], self.ns[f"w_{top}"]


def _read_tags(buf: Any, pos: int, obj: Any, known: dict[int, tuple[str, Any]], budget: list[int]) -> int:
    # A tagged field takes at least 2 bytes (tag, size); unknown ones are kept, so they count as elements.
    count, pos = p.read_uvarint_count(buf, pos, 2, budget)
    unknown = None
    last = -1
    for _ in range(count):
        tag, pos = p.read_uvarint(buf, pos)
        size, pos = p.read_uvarint(buf, pos)
        if tag <= last:
            raise p.WireError(f"tagged field {tag} out of order (after {last})")
        last = tag
        end = pos + size
        if end > len(buf):
            raise p.WireError(f"tagged field {tag} of {size} bytes runs past the end")
        entry = known.get(tag)
        if entry is None:
            if unknown is None:
                unknown = []
            unknown.append((tag, bytes(buf[pos:end])))
        else:
            value, used = entry[1](buf[:end], pos, budget)
            if used != end:
                raise p.WireError(f"tagged field {tag} declared {size} bytes but used {used - pos}")
            setattr(obj, entry[0], value)
        pos = end
    obj._unknown_tags = unknown
    return pos


def _write_tags(b: bytearray, unknown: list | None, known: tuple) -> None:
    entries = [(tag, fn(value)) for tag, present, value, fn in known if present]
    if unknown:
        entries += unknown
        entries.sort(key=lambda e: e[0])
    p.write_uvarint(b, len(entries))
    for tag, data in entries:
        p.write_uvarint(b, tag)
        p.write_uvarint(b, len(data))
        b += data


# ---------------------------------------------------------------- compiled codec objects

class MessageCodec(construct.Construct):
    """Reader and writer of one message table at one version; also a ``construct`` type."""

    def __init__(self, table: dict, version: int) -> None:
        super().__init__()
        self.table = table
        self.version = version
        self.cls = messages.class_for_table(table)
        self._read, self._write = _Generator(table, version).compile()

    def decode(self, buf: Any, pos: int = 0, max_elements: int = p.MAX_ELEMENTS) -> tuple[Any, int]:
        """Decode from ``buf`` at ``pos``; returns (message, end position). Raises ``p.WireError``,
        ``struct.error`` or ``IndexError`` on malformed input (the public functions wrap these), and
        ``p.WireError`` when the message holds more than ``max_elements`` array elements in all."""
        return self._read(buf, pos, p.new_budget(max_elements))

    def encode(self, obj: Any, w: p.Writer | None = None) -> list[Any]:
        w = w or p.Writer()
        self._write(w, obj)
        return w.finish()

    def _parse(self, stream: Any, context: Any, path: Any) -> Any:
        start = stream.tell()
        data = memoryview(stream.read())
        try:
            obj, used = self._read(data, 0, p.new_budget())
        except (p.WireError, struct.error, IndexError, UnicodeDecodeError) as exc:
            raise construct.StreamError(f"{self.table['name']} v{self.version}: {exc}", path=path) from exc
        stream.seek(start + used)
        return obj

    def _build(self, obj: Any, stream: Any, context: Any, path: Any) -> Any:
        for part in self.encode(obj):
            stream.write(bytes(part))
        return obj


_CACHE: dict[tuple[int, int], MessageCodec] = {}


def codec_for(table: dict, version: int) -> MessageCodec:
    """The cached codec of a table (``messages.tables(k).REQUEST`` etc.) at a version."""
    key = (id(table), version)
    c = _CACHE.get(key)
    if c is None:
        if not _in(table["valid"], version):
            raise KeyError(f"{table['name']} has no version {version} (valid {table['valid']})")
        c = _CACHE[key] = MessageCodec(table, version)
    return c


# ---------------------------------------------------------------- API metadata

def api_name(api_key: int) -> str | None:
    entry = APIS.get(api_key)
    return entry[0] if entry else None


def spec_versions(api_key: int) -> tuple[int, int] | None:
    if api_key not in APIS:
        return None
    return tuple(messages.tables(api_key).REQUEST["valid"])  # type: ignore[return-value]


def is_flexible(api_key: int, api_version: int) -> bool:
    return _in(messages.tables(api_key).REQUEST["flexible"], api_version)


def request_header_version(api_key: int, api_version: int) -> int:
    if api_key not in APIS:
        return 1
    if api_key == CONTROLLED_SHUTDOWN_KEY and api_version == 0:
        return 0
    return 2 if is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    # ApiVersions answers with header v0 at every version, so a client that does not yet know the
    # broker's versions can always read the error code (KIP-511).
    if api_key == API_VERSIONS_KEY:
        return 0
    return 1 if is_flexible(api_key, api_version) else 0


def _header_tables() -> Any:
    from protocol.schema import headers

    return headers


def request_table(api_key: int) -> dict:
    return messages.tables(api_key).REQUEST


def response_table(api_key: int) -> dict:
    return messages.tables(api_key).RESPONSE


# ---------------------------------------------------------------- internal records

def internal_table(name: str) -> dict:
    """The table of an internal record format (``OffsetCommitKey``, ``GroupMetadataValue``,
    ``ConsumerProtocolSubscription``...)."""
    from protocol.schema.internal import DATA

    return DATA[name]


_INT16 = struct.Struct(">h")


def encode_versioned(name: str, version: int, obj: Any) -> bytes:
    """An internal record as Kafka writes it: int16 version, then the fields at that version."""
    parts = _encode(internal_table(name), version, obj, "record")
    return _INT16.pack(version) + b"".join(bytes(x) for x in parts)


def decode_versioned(name: str, data: Any) -> tuple[int, Any]:
    """(version, object) of an internal record written by `encode_versioned` (or by Kafka)."""
    mv = data if isinstance(data, memoryview) else memoryview(data)
    try:
        (version,) = _INT16.unpack_from(mv, 0)
        obj, _ = codec_for(internal_table(name), version).decode(mv, 2)
    except KeyError as exc:
        raise DecodeError(f"{name}: {exc.args[0]}") from exc
    except _MALFORMED as exc:
        raise DecodeError(f"malformed {name}: {exc}") from exc
    return version, obj


# ---------------------------------------------------------------- public encode/decode

_KEY_VERSION_CORR = struct.Struct(">hhi")
_MALFORMED = (p.WireError, struct.error, IndexError, UnicodeDecodeError, ValueError)


def decode_request_header(frame: Any) -> tuple[Any, int]:
    """Parse the request header of a frame (without its size prefix); returns (header, body offset).
    Works for unknown API keys too (header v1 is assumed for them)."""
    mv = frame if isinstance(frame, memoryview) else memoryview(frame)
    try:
        api_key, api_version, corr = _KEY_VERSION_CORR.unpack_from(mv, 0)
    except struct.error as exc:
        raise DecodeError(f"request header needs 8 bytes, got {len(mv)}") from exc
    hv = request_header_version(api_key, api_version)
    try:
        return codec_for(_header_tables().REQUEST_HEADER, hv).decode(mv, 0)
    except _MALFORMED as exc:
        raise DecodeError(f"malformed request header v{hv}: {exc}", api_key, api_version, corr) from exc


def decode_request_body(api_key: int, api_version: int, frame: Any, offset: int,
                        correlation_id: int | None = None) -> Any:
    mv = frame if isinstance(frame, memoryview) else memoryview(frame)
    if api_key not in APIS:
        raise DecodeError("unknown api key", api_key, api_version, correlation_id)
    try:
        c = codec_for(request_table(api_key), api_version)
    except KeyError as exc:
        raise DecodeError(f"unsupported version: {exc.args[0]}", api_key, api_version, correlation_id) from exc
    try:
        body, _ = c.decode(mv, offset)
    except _MALFORMED as exc:
        raise DecodeError(f"malformed {c.table['name']} v{api_version}: {exc}",
                          api_key, api_version, correlation_id) from exc
    return body


def decode_request(frame: Any) -> tuple[Any, Any]:
    header, offset = decode_request_header(frame)
    body = decode_request_body(header.request_api_key, header.request_api_version, frame, offset,
                               header.correlation_id)
    return header, body


def _frame(parts: list[Any]) -> list[Any]:
    size = sum(len(x) for x in parts)
    return [p.INT32.pack(size), *parts]


def _encode(table: dict, version: int, body: Any, what: str) -> list[Any]:
    try:
        return codec_for(table, version).encode(body)
    except EncodeError:
        raise
    except KeyError as exc:
        raise EncodeError(exc.args[0]) from exc
    except (struct.error, p.WireError, AttributeError, TypeError, UnicodeEncodeError) as exc:
        raise EncodeError(f"cannot encode {what} {table['name']} v{version}: {exc}") from exc


def encode_response(api_key: int, api_version: int, correlation_id: int, body: Any) -> list[Any]:
    """A complete response frame (4-byte size prefix first) as a list of buffers for writelines."""
    header = messages.ResponseHeader(correlation_id=correlation_id)
    hv = response_header_version(api_key, api_version)
    parts = codec_for(_header_tables().RESPONSE_HEADER, hv).encode(header)
    parts += _encode(response_table(api_key), api_version, body, "response")
    return _frame(parts)


def encode_request(api_key: int, api_version: int, correlation_id: int, client_id: str | None,
                   body: Any) -> list[Any]:
    """A complete request frame (size prefix first); used by tests, tools and the capture script."""
    header = messages.RequestHeader(request_api_key=api_key, request_api_version=api_version,
                                    correlation_id=correlation_id, client_id=client_id)
    hv = request_header_version(api_key, api_version)
    parts = codec_for(_header_tables().REQUEST_HEADER, hv).encode(header)
    parts += _encode(request_table(api_key), api_version, body, "request")
    return _frame(parts)


def decode_response(api_key: int, api_version: int, frame: Any) -> tuple[Any, Any]:
    """Decode a response frame (without its size prefix): (header, body)."""
    mv = frame if isinstance(frame, memoryview) else memoryview(frame)
    hv = response_header_version(api_key, api_version)
    try:
        header, pos = codec_for(_header_tables().RESPONSE_HEADER, hv).decode(mv, 0)
        body, _ = codec_for(response_table(api_key), api_version).decode(mv, pos)
    except _MALFORMED as exc:
        raise DecodeError(f"malformed response: {exc}", api_key, api_version) from exc
    return header, body
