"""Message classes for every Kafka request, response and header, made from the generated tables.

``messages.MetadataResponse`` is a class with one attribute per field of any version (snake_case of the
spec's names) and its nested struct types as class attributes (``MetadataResponse.MetadataResponseTopic``).
Keyword constructors fill omitted fields with the spec's defaults. Classes are built on first access so
that importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from protocol.primitives import ZERO_UUID
from protocol.schema import APIS

_MISSING: Any = object()
_CLASSES: dict[str, type] = {}
_BY_TABLE: dict[int, type] = {}


class Message:
    """Base of every generated message and struct class."""

    __slots__ = ("_unknown_tags",)
    _fields: tuple[dict, ...] = ()
    _spec_name: str = ""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__) and _tags_eq(self, other)

    def __repr__(self) -> str:
        body = ", ".join(f"{f['name']}={_short(getattr(self, f['name']))}" for f in self._fields)
        return f"{type(self).__name__}({body})"

    def to_dict(self) -> dict[str, Any]:
        return {f["name"]: _plain(getattr(self, f["name"])) for f in self._fields}


def _tags_eq(a: Message, b: Message) -> bool:
    return (a._unknown_tags or None) == (b._unknown_tags or None)


def _short(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 32:
        return f"<{len(value)} bytes>"
    return repr(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def default_factory(field: dict, structs: dict[str, type]) -> tuple[Any, bool]:
    """(value, is_fresh_per_instance) for a field's default."""
    default = field["default"]
    if default == "struct":
        # Looked up at call time: a shared struct may be built after the struct that refers to it.
        return (lambda: structs[field["type"]]()), True
    if isinstance(default, list):
        return list, True
    if default == "zero" and field["type"] == "uuid":
        return ZERO_UUID, False
    if field["type"] == "uuid" and isinstance(default, str):
        import uuid

        return uuid.UUID(default), False
    return default, False


def _make_class(name: str, fields: list[dict], structs: dict[str, type], spec_name: str) -> type:
    names = [f["name"] for f in fields]
    namespace: dict[str, Any] = {"_MISSING": _MISSING}
    params, body = [], []
    for i, f in enumerate(fields):
        value, fresh = default_factory(f, structs)
        namespace[f"_d{i}"] = value
        if fresh:
            params.append(f"{f['name']}=_MISSING")
            body.append(f"    self.{f['name']} = _d{i}() if {f['name']} is _MISSING else {f['name']}")
        else:
            params.append(f"{f['name']}=_d{i}")
            body.append(f"    self.{f['name']} = {f['name']}")
    body.append("    self._unknown_tags = None")
    src = f"def __init__(self{', *, ' if params else ''}{', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(src, namespace)  # noqa: S102 - generated from our own tables, never from input
    cls = type(name, (Message,), {
        "__slots__": tuple(names),
        "__init__": namespace["__init__"],
        "_fields": tuple(fields),
        "_spec_name": spec_name,
    })
    return cls


def class_for_table(table: dict) -> type:
    """The message class of one generated table (request, response or header), built once."""
    cls = _BY_TABLE.get(id(table))
    if cls is not None:
        return cls
    structs: dict[str, type] = {}
    for sname in table["structs"]:
        structs[sname] = _make_class(sname, table["structs"][sname], structs, table["name"])
    cls = _make_class(table["name"], table["fields"], structs, table["name"])
    for sname, scls in structs.items():
        setattr(cls, sname, scls)
    cls._structs = structs
    _BY_TABLE[id(table)] = cls
    _CLASSES[table["name"]] = cls
    return cls


def tables(api_key: int) -> Any:
    """The generated module of one API key (REQUEST, RESPONSE tables)."""
    return importlib.import_module(f"protocol.schema.{APIS[api_key][1]}")


def _table_by_name(name: str) -> dict | None:
    if name in ("RequestHeader", "ResponseHeader"):
        from protocol.schema import headers

        return headers.REQUEST_HEADER if name == "RequestHeader" else headers.RESPONSE_HEADER
    from protocol.schema.internal import DATA

    if name in DATA:
        return DATA[name]
    for api_key, (api_name, _) in APIS.items():
        if name == api_name + "Request":
            return tables(api_key).REQUEST
        if name == api_name + "Response":
            return tables(api_key).RESPONSE
    return None


def __getattr__(name: str) -> type:
    cls = _CLASSES.get(name)
    if cls is not None:
        return cls
    table = _table_by_name(name)
    if table is None:
        raise AttributeError(f"module 'protocol.messages' has no message {name!r}")
    return class_for_table(table)
